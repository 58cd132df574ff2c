"""Does the generator chain make lesions? Train MaskVAE3D, diffusion and UCMT for one seed size
through the platform's own stages (in-process, no Ray or MLflow), draw a pool and report what it
looks like: pair agreement (UCMT pseudo-label vs conditioning mask, before and after the pair
check), placement, realism (Frechet distance, MS-SSIM, wavelet band energies vs real lesion
slices) and the training losses at the start and end of each stage. Writes a sample grid PNG
(synthetic slice | with its conditioning mask in green | with its pseudo-label in red) to open.

    python benchmarks/generator_quality.py --seed-size 10 --diffusion-steps 1500 --ucmt-steps 800 \\
        --out /tmp/gen && xdg-open /tmp/gen/samples.png
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import yaml
from salient.platform.artifacts import sample_grid_png
from salient.platform.cohort.prepare import load_cohort
from salient.platform.stage_cache import StageCache
from salient.platform.stages import DIFFUSION, MASK_VAE, POOL, UCMT
from salient.platform.stages.base import LOSS_HISTORY
from salient.platform.stages.trial import plan_trial, run_stage
from salient.platform.study import load_study
from salient.platform.torch_runtime import configure_torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=280)
    parser.add_argument("--positives", type=int, default=100)
    parser.add_argument("--seed-size", type=int, default=10)
    parser.add_argument("--dose", type=float, default=4.0, help="pool size, as a ratio of the seed's lesion slices")
    parser.add_argument("--mask-vae-epochs", type=int, default=80)
    parser.add_argument("--diffusion-steps", type=int, default=1500)
    parser.add_argument("--ucmt-steps", type=int, default=800)
    parser.add_argument("--sampling-steps", type=int, default=20)
    parser.add_argument("--domain", choices=["wavelet", "pixel"], default="wavelet")
    parser.add_argument("--stages", default="{}", help="extra stage settings as YAML, e.g. '{diffusion: {lr: 5e-4}}'")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    configure_torch(args.threads)
    extra = yaml.safe_load(args.stages) or {}
    stages = {
        "preset": "tiny",
        "mask_vae": {"epochs": args.mask_vae_epochs, **extra.get("mask_vae", {})},
        "diffusion": {
            "train_steps": args.diffusion_steps,
            "domain": args.domain,
            "guidance": {"sampling_steps": args.sampling_steps},
            **extra.get("diffusion", {}),
        },
        "ucmt": {"train_steps": args.ucmt_steps, **extra.get("ucmt", {})},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    study_file = args.out / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "generator_quality",
                "cohort": {
                    "source": "phantom",
                    "phantom": {"n_subjects": args.subjects, "n_positive": args.positives, "seed": 0},
                },
                "stages": stages,
                "search_space": {"dose": {"grid": [args.dose]}, "seed_size": {"grid": [args.seed_size]}},
                "evaluation": {"prevalences": [0.1], "test_fraction": 0.4, "validation_fraction": 0.35},
                "output_dir": str(args.out / "run"),
            }
        )
    )
    study = load_study(study_file)
    cohort = load_cohort(study.cohort, study.output_dir)
    cache = StageCache(args.out / "run" / "stage_cache")
    plan = plan_trial(study, {"dose": args.dose, "seed_size": args.seed_size}, 0, args.dose, cohort)
    print(f"seed {args.seed_size}: {plan.n_real_positive} lesion slices; pool of {plan.n_pool} pairs")
    for name in (MASK_VAE, DIFFUSION, UCMT, POOL):
        start = time.perf_counter()
        output, reused = run_stage(plan, name, cohort, cache)
        meta = cache.meta(plan.keys[name])
        curve = meta.get(LOSS_HISTORY) or []
        loss = f"loss {curve[0]:.4f} -> {curve[-1]:.4f}" if curve else ""
        print(f"{name}: {'reused' if reused else 'trained'} in {time.perf_counter() - start:.0f} s {loss}", flush=True)
    meta = cache.meta(plan.keys[POOL])
    keys = [
        "n_drawn",
        "n_kept",
        "n_rejected_empty",
        "n_rejected_low_dice",
        "placement_rejected",
        "drawn_mask_dice",
        "mask_dice",
        "frechet_distance",
        "ms_ssim",
        "synthetic_ll_std",
        "real_ll_std",
        "synthetic_hh_var",
        "real_hh_var",
    ]
    print("| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    print("| " + " | ".join("-" if meta.get(k) is None else f"{meta[k]:.4g}" for k in keys) + " |")
    png = sample_grid_png(output, args.out / "samples.png", n=12, scale=4)
    print(f"sample grid: {png}")


if __name__ == "__main__":
    main()
