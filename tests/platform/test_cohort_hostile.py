"""Hostile and careless cohort input (#15 items 5, 7 and 11): NIfTI files that lie about their
size, manifests in other encodings, user strings that look like Rich markup.

Memory is measured in a child process (its peak RSS before and after the read), with small
files that claim, or inflate to, gigabytes; a control read of a real 128 MiB volume shows the
measurement sees what a read costs.
"""

from __future__ import annotations

import gzip
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from salient.platform.cohort.check import check_cohort
from salient.platform.cohort.manifest import parse_manifest, read_manifest
from salient.platform.cohort.nifti_guard import (
    DEFAULT_MAX_VOXELS,
    MAX_VOXELS_ENV,
    NiftiError,
    NiftiTooLargeError,
    read_header,
    read_nifti,
)
from salient.platform.errors import CohortError

from tests.conftest import REPO
from tests.platform.cohort_layouts import load_nifti


def _header(shape: tuple[int, ...], dtype: type = np.int16, version: int = 1) -> bytes:
    """A valid single-file NIfTI header (+ the 4 extension bytes) claiming ``shape``."""
    hdr = nib.Nifti1Header() if version == 1 else nib.Nifti2Header()
    hdr.set_data_dtype(dtype)
    hdr["dim"][0] = len(shape)
    hdr["dim"][1 : len(shape) + 1] = shape
    hdr["pixdim"][1:4] = 1.0
    offset = 352 if version == 1 else 544
    hdr["vox_offset"] = offset
    hdr["magic"] = b"n+1" if version == 1 else b"n+2"
    return hdr.binaryblock + b"\x00" * (offset - len(hdr.binaryblock))


def _gzip_members_of_zeros(n_members: int, member_bytes: int) -> bytes:
    """``n_members`` concatenated gzip members of ``member_bytes`` zeros each (a valid gzip file)."""
    return gzip.compress(b"\x00" * member_bytes, compresslevel=9) * n_members


def _peak_rss_of_read(path: Path, env: dict[str, str] | None = None) -> tuple[str, int]:
    """Run read_nifti(path) in a child; return its outcome and the peak-RSS growth in bytes.

    The peak is the child's own ``VmHWM`` (/proc/self/status): ``getrusage``'s ``ru_maxrss``
    is carried over from the parent on Linux, so under pytest (GBs with torch loaded) it would
    hide any growth and the bound below could never fail.
    """
    code = f"""
from salient.platform.cohort.nifti_guard import read_nifti, NiftiError

def peak():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) * 1024

before = peak()
try:
    data, _ = read_nifti({str(path)!r})
    outcome = f"read {{data.shape}}"
except NiftiError as exc:
    outcome = f"refused: {{exc}}"
print(outcome)
print(peak() - before)
"""
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, **(env or {})},
    )
    assert done.returncode == 0, done.stderr
    outcome, grown = done.stdout.strip().splitlines()[-2:]
    return outcome, int(grown)


MIB = 2**20


def test_480_byte_file_claiming_2048x2048x512_is_refused_at_once(tmp_path: Path) -> None:
    liar = tmp_path / "liar.nii"
    liar.write_bytes(_header((2048, 2048, 512)) + b"\x00" * 128)
    assert liar.stat().st_size == 480
    with pytest.raises(NiftiTooLargeError, match=r"liar\.nii: header claims 2048x2048x512 = 2,147,483,648 voxels"):
        read_header(liar)
    # With the cap raised past the claim, the file size still refuses it before any read.
    outcome, grown = _peak_rss_of_read(liar, {MAX_VOXELS_ENV: str(2**32)})
    assert outcome.startswith("refused: unreadable or corrupt NIfTI liar.nii: truncated")
    assert "4,294,967,296 voxel bytes" in outcome and "the file has 480 bytes" in outcome
    assert grown < 32 * MIB, grown


def test_4_mb_gzip_that_inflates_to_4_gib_costs_little_memory(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.nii.gz"
    # The header promises 64^3 int16 (512 KiB); the stream then inflates to 4 GiB of zeros.
    bomb.write_bytes(gzip.compress(_header((64, 64, 64))) + _gzip_members_of_zeros(64, 64 * MIB))
    assert bomb.stat().st_size < 5 * 10**6
    outcome, grown = _peak_rss_of_read(bomb)
    assert outcome.startswith("refused: unreadable or corrupt NIfTI bomb.nii.gz: decompresses to more than the")
    assert grown < 32 * MIB, grown


def test_the_memory_measurement_sees_a_real_read(tmp_path: Path) -> None:
    """Control for the bounds above: a genuine 128 MiB volume does show up in the child's peak RSS."""
    path = tmp_path / "real.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((256, 256, 1024), np.int16), np.eye(4)), str(path))
    outcome, grown = _peak_rss_of_read(path)
    assert outcome == "read (256, 256, 1024)"
    assert grown > 64 * MIB, grown


def test_gzip_promising_4_gib_but_holding_little_costs_what_it_holds(tmp_path: Path) -> None:
    """Within a raised cap, the buffer the header promises is only reserved: pages arrive with data."""
    short = tmp_path / "short.nii.gz"
    short.write_bytes(gzip.compress(_header((2048, 2048, 512)) + b"\x00" * MIB))
    outcome, grown = _peak_rss_of_read(short, {MAX_VOXELS_ENV: str(2**32)})
    assert "truncated: decompresses to" in outcome and "of the 4,294,967,648 bytes" in outcome
    assert grown < 64 * MIB, grown


def test_32767_cubed_is_a_named_problem_and_the_check_goes_on(tmp_path: Path, phantom_dir: Path) -> None:
    good = read_manifest(phantom_dir / "labels.csv").records
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(_header((32767, 32767, 32767))))
    (tmp_path / "liar.nii").write_bytes(_header((2048, 2048, 512)) + b"\x00" * 128)
    rows = [
        "subject,image,mask,label",
        f"huge,huge.nii.gz,{good[0].mask},{good[0].label}",
        f"liar,{good[1].image},liar.nii,{good[1].label}",
        f"fine,{good[2].image},{good[2].mask},{good[2].label}",
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    report = check_cohort(tmp_path)
    assert report.n_subjects == 3
    assert [(p.subject, p.kind) for p in report.problems] == [("huge", "bad image"), ("liar", "bad mask")]
    huge = report.problems[0].detail
    assert "huge.nii.gz: header claims 32767x32767x32767 = 35,181,150,961,663 voxels" in huge
    assert f"above the cap of {DEFAULT_MAX_VOXELS:,}" in huge
    # The same through the CLI: exit 2 with the files named, not a bare MemoryError (exit 1).
    done = subprocess.run(
        [sys.executable, "-m", "salient.platform.cli", "cohort", "check", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 2, done.stderr
    assert "huge.nii.gz: header claims 32767x32767x32767" in done.stdout and "liar.nii" in done.stdout
    assert "MemoryError" not in done.stdout + done.stderr


def test_voxel_cap_comes_from_the_argument_then_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "small.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((10, 10, 10), np.int16), np.eye(4)), str(path))
    assert read_header(path).n_voxels == 1000
    monkeypatch.setenv(MAX_VOXELS_ENV, "999")
    with pytest.raises(NiftiTooLargeError, match="above the cap of 999"):
        read_header(path)
    assert read_header(path, max_voxels=1000).n_voxels == 1000  # the study's cohort.max_voxels wins
    monkeypatch.setenv(MAX_VOXELS_ENV, "lots")
    with pytest.raises(CohortError, match=f"{MAX_VOXELS_ENV} must be a positive integer, got 'lots'"):
        read_header(path)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("zero_dim.nii", lambda: _header((64, 0, 64)) + b"\x00" * 64, r"dimensions \(64, 0, 64\) must all be >= 1"),
        ("pair.nii", lambda: _header((4, 4, 4)).replace(b"n+1\x00", b"ni1\x00") + b"\x00" * 128, "magic b'ni1'"),
        ("not_gz.nii.gz", lambda: _header((4, 4, 4)) + b"\x00" * 128, "is not gzip-compressed"),
        ("gz.nii", lambda: gzip.compress(_header((4, 4, 4)) + b"\x00" * 128), "is gzip-compressed"),
        ("short.nii", lambda: b"\x5c\x01\x00\x00" + b"\x00" * 100, "shorter than a NIfTI header"),
        ("text.nii.gz", lambda: gzip.compress(b"hello, not an image" * 40), "not a NIfTI-1 or NIfTI-2 header"),
        ("image.png", lambda: b"\x89PNG", r"only \.nii and \.nii\.gz files are read"),
    ],
)
def test_malformed_files_are_named_problems(
    tmp_path: Path, name: str, content: Callable[[], bytes], match: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content())
    with pytest.raises(NiftiError, match=match) as err:
        read_nifti(path)
    assert name in str(err.value)


def test_special_files_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.nii"
    os.mkfifo(fifo)  # opening a FIFO for reading would block forever
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(NiftiError, match="not a regular file"):
            read_nifti(path)


@pytest.mark.parametrize("version", [1, 2])
@pytest.mark.parametrize("compressed", [True, False])
def test_guarded_read_equals_nibabel(tmp_path: Path, version: int, compressed: bool) -> None:
    """The guard decodes exactly as nibabel does: dtypes, byte order, scaling, 4D, both versions."""
    rng = np.random.default_rng(version)
    cases = {
        "i16": (rng.integers(-1024, 3000, (9, 7, 5)).astype(np.int16), None),
        "be_f4": (rng.standard_normal((6, 5, 4, 3)).astype(">f4"), None),
        "scaled_u8": (rng.integers(0, 255, (5, 5, 5)).astype(np.uint8), (0.5, -10.0)),
    }
    klass = nib.Nifti1Image if version == 1 else nib.Nifti2Image
    for label, (data, scaling) in cases.items():
        affine = np.array([[0.0, -2.0, 0, 10], [1.5, 0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]])
        img = klass(data, affine)
        if scaling:
            img.header.set_slope_inter(*scaling)
        path = tmp_path / f"{label}.nii{'.gz' if compressed else ''}"
        nib.save(img, str(path))
        ref = load_nifti(path)
        got, got_affine = read_nifti(path)
        expected = np.asarray(ref.dataobj)
        assert got.dtype == expected.dtype and got.shape == expected.shape, label
        assert np.array_equal(got, expected), label
        assert np.allclose(got_affine, ref.affine), label


def test_preprocessing_refuses_a_lying_header_with_a_cohort_error(tmp_path: Path, phantom_dir: Path) -> None:
    from salient.platform.cohort.manifest import SubjectRecord
    from salient.platform.cohort.preprocess import preprocess_subject
    from salient.platform.study.schema import PreprocessSpec

    rec = read_manifest(phantom_dir / "labels.csv").records[0]
    (tmp_path / "huge.nii.gz").write_bytes(gzip.compress(_header((32767, 32767, 32767))))
    bad = SubjectRecord("subj-x", tmp_path / "huge.nii.gz", rec.mask, rec.label)
    with pytest.raises(CohortError, match=r"subject subj-x: huge\.nii\.gz: header claims 32767x32767x32767"):
        preprocess_subject(bad, PreprocessSpec())


# --- manifests written by spreadsheets (#15 item 11) -------------------------------------------


def _manifest_text(phantom_dir: Path) -> str:
    return (phantom_dir / "labels.csv").read_text()


def test_excel_csv_utf8_with_bom_is_read(tmp_path: Path, phantom_dir: Path) -> None:
    text = (
        _manifest_text(phantom_dir)
        .replace("images/", f"{phantom_dir}/images/")
        .replace("masks/", f"{phantom_dir}/masks/")
    )
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode("utf-8"))  # what Excel writes
    manifest = read_manifest(path)
    reference = read_manifest(phantom_dir / "labels.csv")
    assert [(r.subject, r.image, r.mask, r.label, r.tvr) for r in manifest.records] == [
        (r.subject, r.image, r.mask, r.label, r.tvr) for r in reference.records
    ]


@pytest.mark.parametrize(
    ("encode", "match"),
    [
        (lambda t: t.encode("utf-16"), r"UTF-16 text .*save it as 'CSV UTF-8'"),
        (lambda t: t.replace("subject,", "subjéct,", 1).encode("cp1252"), r"not UTF-8 text \(byte 0xe9 at offset 4\)"),
    ],
)
def test_other_encodings_give_a_clear_error_naming_the_file(
    tmp_path: Path, phantom_dir: Path, encode: Callable[[str], bytes], match: str
) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(encode(_manifest_text(phantom_dir)))
    with pytest.raises(CohortError, match=match) as err:
        read_manifest(path)
    assert str(path) in str(err.value)


def test_semicolon_manifest_gets_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("subject;image;mask;label\na;a.nii.gz;m.nii.gz;1\n")
    _, problems = parse_manifest(path)
    assert "semicolon-separated, a manifest is comma-separated" in problems[0]


# --- user strings are not Rich markup (#15 item 7, cohort output) --------------------------------


@pytest.mark.parametrize("subject", ["[/]", "[link=https://evil.example]click[/link]", "[bold red]x", "runs[old]"])
def test_cohort_check_prints_user_strings_literally(
    tmp_path: Path, subject: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from salient.platform.cli import main

    monkeypatch.setenv("COLUMNS", "400")
    folder = tmp_path / "runs[old]"
    folder.mkdir()
    (folder / "labels.csv").write_text(f'subject,image,mask,label\n"{subject}",[x].nii.gz,[/b].nii.gz,0\n')
    assert main(["cohort", "check", str(folder)]) == 2  # missing files: bad input, not a crash (exit 1)
    out = capsys.readouterr().out
    assert subject in out
    assert str(folder / "labels.csv") in out  # the folder name survives, brackets included
    assert "[x].nii.gz" in out and "[/b].nii.gz" in out


def test_cohort_phantom_prints_a_bracketed_folder_literally(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from salient.platform.cli import main

    monkeypatch.setenv("COLUMNS", "400")
    out_dir = tmp_path / "runs[old]"
    args = ["cohort", "phantom", str(out_dir), "--subjects", "4", "--positives", "2", "--shape", "32", "32", "8"]
    assert main(args) == 0
    assert f"-> {out_dir / 'labels.csv'}" in capsys.readouterr().out


def test_dataset_json_that_is_too_deep_or_too_large_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "dataset.json").write_text("[" * 100_000 + "]" * 100_000)
    report = check_cohort(tmp_path, source="nnunet")
    assert report.problems[0].kind == "dataset.json" and "RecursionError" in report.problems[0].detail
    with (tmp_path / "dataset.json").open("wb") as fh:
        fh.truncate(65 * 2**20)  # sparse: costs no disk
    report = check_cohort(tmp_path, source="msd")
    assert "not read" in report.problems[0].detail


def test_header_numbers_match_a_hand_computation(tmp_path: Path) -> None:
    path = tmp_path / "v.nii.gz"
    path.write_bytes(gzip.compress(_header((300, 200, 100), np.float32)))
    info = read_header(path)
    assert info.n_voxels == 6_000_000 == math.prod((300, 200, 100))
    assert info.data_bytes == 24_000_000 and info.file_bytes == 24_000_352
    assert info.compressed and info.shape == (300, 200, 100) and info.offset == 352


def test_gzip_framing_legal_variants_and_truncation(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(-1000, 1000, (40, 50, 60)).astype(np.int16)  # ~240 kB, incompressible
    raw = nib.Nifti1Image(data, np.eye(4)).to_bytes()
    cases = {
        "padded.nii.gz": gzip.compress(raw) + b"\x00" * 4096,  # zero padding after the stream (tape/block tools)
        "members.nii.gz": gzip.compress(raw[:400]) + gzip.compress(raw[400:]),  # several members, as `cat a.gz b.gz`
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        got, _ = read_nifti(tmp_path / name)
        assert np.array_equal(got, data), name
    whole = gzip.compress(raw)
    (tmp_path / "no_trailer.nii.gz").write_bytes(whole[:-8])  # every voxel there, CRC and length cut off
    with pytest.raises(NiftiError, match="the gzip stream ends before its trailer"):
        read_nifti(tmp_path / "no_trailer.nii.gz")
    (tmp_path / "half.nii.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(NiftiError, match="truncated: decompresses to"):
        read_nifti(tmp_path / "half.nii.gz")
    corrupt = bytearray(whole)
    corrupt[-6] ^= 0xFF  # the stored length no longer matches
    (tmp_path / "crc.nii.gz").write_bytes(bytes(corrupt))
    with pytest.raises(NiftiError, match="error"):
        read_nifti(tmp_path / "crc.nii.gz")
