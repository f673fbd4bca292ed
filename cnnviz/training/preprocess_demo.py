"""Data preprocessing, as the lecture draws it: a 2-D point cloud zero-centred, normalised,
decorrelated (PCA) and whitened; and an image dataset's mean image and per-channel mean and std."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


def point_cloud(n: int = 400, seed: int = 0) -> np.ndarray:
    """(n, 2) correlated Gaussian points far from the origin, with unequal spreads."""
    rng = np.random.default_rng(seed)
    angle = np.deg2rad(30)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return rng.normal(size=(n, 2)) * np.array([3.0, 0.8]) @ rotation.T + np.array([6.0, 4.0])


def preprocess_stages(points: np.ndarray) -> dict[str, np.ndarray]:
    """The point cloud after each step (CS231n): original; zero-centred (minus the mean);
    normalised (each dimension divided by its std); decorrelated (rotated onto the principal axes,
    covariance diagonal); whitened (decorrelated and each axis divided by its std, covariance I)."""
    centred = points - points.mean(0)
    cov = centred.T @ centred / len(points)
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, eigenvectors = eigenvalues[order], eigenvectors[:, order]
    eigenvectors = eigenvectors * np.sign(eigenvectors[0:1] + 1e-12)  # a fixed orientation
    rotated = centred @ eigenvectors
    return {
        "original": points,
        "zero-centred": centred,
        "normalised": centred / centred.std(0),
        "decorrelated (PCA)": rotated,
        "whitened": rotated / np.sqrt(eigenvalues + 1e-9),
    }


def covariance(points: np.ndarray) -> np.ndarray:
    """The 2×2 covariance of the points."""
    centred = points - points.mean(0)
    return centred.T @ centred / len(points)


@dataclass
class ImageStatistics:
    """An image dataset's statistics (AlexNet subtracts the mean image, VGG the per-channel mean,
    ResNet also divides by the per-channel std)."""

    mean_image: np.ndarray  # (H, W, C) in [0, 1]
    channel_mean: np.ndarray  # (C,)
    channel_std: np.ndarray  # (C,)


def image_statistics(x: Tensor) -> ImageStatistics:
    """Statistics of pixels ``x`` (N, C, H, W) in [0, 1]."""
    array = x.double().numpy()
    return ImageStatistics(array.mean(0).transpose(1, 2, 0), array.mean(axis=(0, 2, 3)), array.std(axis=(0, 2, 3)))


def subtract(x: Tensor, stats: ImageStatistics, mode: str) -> np.ndarray:
    """Images (N, C, H, W) after "mean image" subtraction, "channel mean" subtraction, or
    "channel mean and std" normalisation; returned as (N, H, W, C) float arrays."""
    array = x.double().numpy().transpose(0, 2, 3, 1)
    if mode == "mean image":
        return array - stats.mean_image
    if mode == "channel mean":
        return array - stats.channel_mean
    if mode == "channel mean and std":
        return (array - stats.channel_mean) / np.maximum(stats.channel_std, 1e-6)
    raise ValueError("mode is 'mean image', 'channel mean' or 'channel mean and std'.")
