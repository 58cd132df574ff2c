"""Turn preprocessed (Z, H, W) subjects into the slice tensors each stage trains on.

2.5D context comes from neighbouring slices; at the ends of a volume the nearest slice is
repeated (edge clamping), so every slice has the same number of context channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from salient.platform.cohort.preprocess import PreprocessedSubject

__all__ = ["SliceSet", "neighbour_stack", "slice_set", "triplets"]


def neighbour_stack(volume: np.ndarray, offsets: Sequence[int]) -> np.ndarray:
    """(Z, H, W) -> (Z, len(offsets), H, W): slice z + offset for every z, clamped at the ends."""
    z = np.arange(volume.shape[0])
    idx = np.clip(z[:, None] + np.asarray(offsets, dtype=int)[None, :], 0, volume.shape[0] - 1)
    return volume[idx]


def triplets(volume: np.ndarray) -> np.ndarray:
    """(Z, H, W) -> (Z, 3, H, W) detector input [z-1, z, z+1]."""
    return neighbour_stack(volume, (-1, 0, 1))


@dataclass(frozen=True)
class SliceSet:
    """Slices of several subjects. Tensors are float32; ``subject`` and ``z`` index each slice."""

    image: torch.Tensor  # (N, 1, H, W) in [-1, 1]
    mask: torch.Tensor  # (N, 1, H, W) in {0, 1}
    neighbours: torch.Tensor  # (N, S, H, W) diffusion context
    triplet: torch.Tensor  # (N, 3, H, W) detector context
    subject: tuple[str, ...]
    z: torch.Tensor  # (N,)

    @property
    def has_lesion(self) -> torch.Tensor:
        return self.mask.flatten(1).amax(1) > 0.5

    def select(self, index: torch.Tensor) -> SliceSet:
        ids = index.tolist()
        return SliceSet(
            self.image[index],
            self.mask[index],
            self.neighbours[index],
            self.triplet[index],
            tuple(self.subject[i] for i in ids),
            self.z[index],
        )

    def __len__(self) -> int:
        return int(self.image.shape[0])


def slice_set(subjects: Mapping[str, PreprocessedSubject], ids: Sequence[str], offsets: Sequence[int]) -> SliceSet:
    """Every slice of the given subjects, in subject then z order."""
    if not ids:
        raise ValueError("slice_set needs at least one subject")
    images, masks, neigh, trip, subj, zs = [], [], [], [], [], []
    for sid in ids:
        s = subjects[sid]
        images.append(s.image[:, None])
        masks.append(s.mask[:, None].astype(np.float32))
        neigh.append(neighbour_stack(s.image, offsets))
        trip.append(triplets(s.image))
        subj.extend([sid] * s.image.shape[0])
        zs.append(np.arange(s.image.shape[0]))
    return SliceSet(
        torch.from_numpy(np.concatenate(images)).float(),
        torch.from_numpy(np.concatenate(masks)).float(),
        torch.from_numpy(np.concatenate(neigh)).float(),
        torch.from_numpy(np.concatenate(trip)).float(),
        tuple(subj),
        torch.from_numpy(np.concatenate(zs)),
    )
