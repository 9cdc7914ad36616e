"""Adverse conditions as image-space physics on top of a shaded frame, using its exact depth.

* **Fog** (Foggy Cityscapes, Sakaridis et al. 2018): the standard optical model
  ``I = R·t + L·(1 − t)`` with transmittance ``t = exp(−β·ℓ)``, ℓ the distance from the camera in
  metres and β the attenuation coefficient in m⁻¹ (0.005, 0.01, 0.02 ↔ visibility ≈ 600, 300,
  150 m). Sky (ℓ = ∞) becomes the atmospheric light L.
* **Rain** (Rain Cityscapes, Hu et al. 2019): rain streaks plus rain accumulation (a veil that
  behaves like fog). The file name parameters are used consistently: ``alpha`` is the streak
  opacity/density, ``beta`` the veil's attenuation coefficient in m⁻¹ (the fog model above), and
  ``dropsize`` the streak size (thicker and longer for larger values); ``pattern`` seeds the streak
  layer (angle and positions), shared by every frame rendered with that pattern, as in the real set.
* **Snow**: flakes of several sizes (the near ones larger and blurred) and a bright haze; the
  white cover on the ground is a surface change done by the look (``appearance.shade``).
* **Night**: illumination by street lamps, the ego vehicle's headlights and vehicles' own lights,
  replacing the sun; :func:`night_illumination` is used by the look, :func:`bloom` glows the
  light sources.

All functions take float32 RGB images in [0, 1] (values may exceed 1 at lights) and return new
arrays; randomness comes from the caller's generator.
"""

from __future__ import annotations

import functools
import math

import cv2
import numpy as np

FOGGY_CITYSCAPES_BETAS = (0.005, 0.01, 0.02)
# (alpha, beta, dropsize) of Rain Cityscapes.
RAIN_CITYSCAPES_SETTINGS = ((0.01, 0.005, 0.01), (0.02, 0.01, 0.005), (0.03, 0.015, 0.002))


def transmittance(distance: np.ndarray, beta: float) -> np.ndarray:
    """exp(−β·ℓ); 0 for infinite distance (sky)."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.exp(-beta * distance)
    return np.nan_to_num(t, nan=0.0).astype(np.float32)


def fog(image: np.ndarray, distance: np.ndarray, beta: float, airlight, t: np.ndarray | None = None) -> np.ndarray:
    """Koschmieder's law: ``I·t + L·(1 − t)``, ``t = exp(−β·distance)`` (or a precomputed ``t``)."""
    t = (transmittance(distance, beta) if t is None else t)[..., None]
    airlight = np.asarray(airlight, dtype=np.float32)
    return (image - airlight) * t + airlight


@functools.lru_cache(maxsize=64)
def rain_streaks(height: int, width: int, alpha: float, dropsize: float, pattern: int, seed: int) -> np.ndarray:
    """(H, W) float32 streak opacity for one rain pattern: sparse drops smeared along the fall
    direction. Deterministic in its arguments; cached because every frame of a pattern shares it."""
    rng = np.random.default_rng([seed, pattern, int(alpha * 1e4), int(dropsize * 1e4), height, width])
    scale = width / 512
    angle = math.radians(rng.uniform(-25, 25))
    length = max(3, int(round((14 + 2200 * dropsize) * scale * rng.uniform(0.8, 1.2))))
    drops: np.ndarray = (rng.random((height, width)) < alpha * 0.6).astype(np.float32)
    drops *= rng.uniform(0.4, 1.0, (height, width)).astype(np.float32)
    if dropsize >= 0.005:  # large drops: thicker streaks
        drops = cv2.dilate(drops, np.ones((1, 2), np.uint8))
    kernel = np.zeros((length, length), np.float32)
    c = (length - 1) / 2
    dx, dy = math.sin(angle) * c, math.cos(angle) * c
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    kernel /= max(kernel.sum(), 1)
    streaks: np.ndarray = cv2.filter2D(drops, -1, kernel, borderType=cv2.BORDER_REFLECT) * length * 0.35
    streaks = cv2.GaussianBlur(streaks, (0, 0), 0.5 * scale + 30 * dropsize * scale)
    return np.clip(streaks * (0.6 + 20 * alpha), 0, 0.85).astype(np.float32)


def rain(image: np.ndarray, distance: np.ndarray, alpha: float, beta: float, dropsize: float, pattern: int,
         seed: int, airlight) -> np.ndarray:
    """Rain accumulation (a veil by depth) and streaks of the given pattern."""
    height, width = image.shape[:2]
    veiled = fog(image, distance, beta, airlight)
    s = rain_streaks(height, width, alpha, dropsize, pattern, seed)[..., None]
    brightness = np.asarray(airlight, dtype=np.float32) * 1.05 + 0.08
    return veiled * (1 - s) + brightness * s


def snowfall(image: np.ndarray, rng: np.random.Generator, density: float) -> np.ndarray:
    """Falling flakes in three depth layers: many small sharp far flakes, fewer large blurred
    near ones."""
    height, width = image.shape[:2]
    scale = width / 512
    out = image.copy()
    for layer, (count, radius, blur) in enumerate(((1.0, 0.6, 0.3), (0.25, 1.3, 0.8), (0.05, 3.0, 2.0))):
        n = int(density * count * height * width / 150)
        flakes = np.zeros((height, width), np.float32)
        ys = rng.integers(0, height, n)
        xs = rng.integers(0, width, n)
        for x, y in zip(xs.tolist(), ys.tolist()):
            cv2.circle(flakes, (x, y), max(1, int(round(radius * scale))) if layer else 0, 1.0, -1)
        flakes = cv2.GaussianBlur(flakes, (0, 0), max(0.3, blur * scale)) * (0.9 if layer < 2 else 0.6)
        k = np.clip(flakes, 0, 1)[..., None]
        out = out * (1 - k) + np.float32(0.95) * k
    return out


def lens_drops(image: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """Out-of-focus raindrops on the windscreen: blurred, slightly brightened discs."""
    height, width = image.shape[:2]
    blurred = cv2.GaussianBlur(image, (0, 0), 3.0 * width / 512)
    mask: np.ndarray = np.zeros((height, width), np.float32)
    for _ in range(count):
        r = int(rng.uniform(4, 14) * width / 512)
        cv2.circle(mask, (int(rng.integers(0, width)), int(rng.integers(0, height))), r, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), 1.5)[..., None]
    return image * (1 - mask) + (blurred * 1.08 + 0.03) * mask


def night_illumination(points: np.ndarray, normals: np.ndarray, lights, camera_position: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) irradiance at night: a faint sky glow, pools of warm light under street lamps
    (inverse-square with a soft core, cosine on the surface normal) and the ego vehicle's
    headlights (a cone along the road ahead)."""
    height, width = points.shape[1:]
    glow = np.float32(rng.uniform(0.04, 0.08))
    light = np.full((height, width, 3), glow, dtype=np.float32) * np.array([0.7, 0.8, 1.0], dtype=np.float32)
    finite = np.isfinite(points).all(axis=0)
    p = np.where(finite, points, 0).astype(np.float32)
    for position, rgb, reach in lights:
        d = position.astype(np.float32)[:, None, None] - p
        dist2 = (d ** 2).sum(axis=0)
        cosine = np.clip((d * normals).sum(axis=0) / np.sqrt(dist2 + 1e-6), 0, 1)
        intensity = 0.45 * cosine * reach ** 2 / (dist2 + reach ** 2 * 0.35)
        light += intensity[..., None] * rgb
    # Ego headlights: low beams light the road a few tens of metres ahead.
    rel = p - camera_position.astype(np.float32)[:, None, None]
    ahead = np.clip(rel[2], 0, None)
    cone = np.exp(-(rel[0] / (0.35 * ahead + 1.0)) ** 2) * np.exp(-ahead / 22.0) * (ahead > 2.0)
    light += (0.45 * cone)[..., None] * np.array([1.0, 0.95, 0.85], dtype=np.float32)
    return light * finite[..., None] + (~finite)[..., None] * glow


def bloom(image: np.ndarray, emission: np.ndarray, strength: float) -> np.ndarray:
    """Light sources glow: the emission is added, blurred at two radii."""
    width = image.shape[1]
    glow = cv2.GaussianBlur(emission, (0, 0), 2.0 * width / 512) * 0.8 + cv2.GaussianBlur(
        emission, (0, 0), 7.0 * width / 512) * 0.6
    return image + strength * (emission + glow)
