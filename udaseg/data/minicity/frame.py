"""One frame of a domain, end to end: scene → render → look → condition → camera → labels.

This is the only place that knows the order of the stages. The camera rig of the Cityscapes domain
(the ego vehicle's bonnet at the bottom and a thin rectification border at the image edges, both
void in the labels, as in real Cityscapes) is added here because it belongs to neither the scene
nor the look.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from udaseg.data.minicity import weather
from udaseg.data.minicity.appearance import LOOKS, camera_effects, shade
from udaseg.data.minicity.domains import DOMAINS
from udaseg.data.minicity.layout import sample_scene
from udaseg.data.minicity.render import Render, render

EGO_VEHICLE, RECTIFICATION_BORDER = 1, 2
HOOD_DISTANCE_M = 1.8  # for fog: the bonnet is right in front of the camera


@dataclass
class Frame:
    render: Render
    image: np.ndarray  # (H, W, 3) uint8 RGB, final
    label_ids: np.ndarray  # (H, W) uint8 Cityscapes label ids (incl. ego vehicle / border)
    distance: np.ndarray  # (H, W) float32 metres from the camera (inf = sky)
    airlight: np.ndarray  # (3,) atmospheric light for fog variants of this frame

    def synthia_ids(self) -> np.ndarray:
        return self.render.synthia_ids()

    def instance_ids(self) -> np.ndarray:
        return self.render.instance_ids()


def make_frame(domain: str, rng: np.random.Generator, size: tuple[int, int], style: int = 0,
               condition: str = "clear") -> Frame:
    """Render one frame of ``domain`` (``condition`` ∈ clear, fog, night, rain, snow)."""
    spec = DOMAINS[domain]
    look = LOOKS[domain]
    scene = sample_scene(rng, spec, size)
    r = render(scene)
    shaded = shade(r, look, rng, style=style, condition=condition)
    image = shaded.image
    labels = r.label_ids()
    distance = r.distance()
    airlight = np.clip(rng.uniform(0.72, 0.9) + rng.normal(0, 0.015, 3), 0, 1).astype(np.float32)

    if condition == "fog":
        image = weather.fog(image, distance, rng.uniform(0.015, 0.05), airlight)
    elif condition == "rain":
        image = weather.rain(image, distance, rng.uniform(0.01, 0.03), rng.uniform(0.005, 0.02),
                             rng.uniform(0.002, 0.01), int(rng.integers(1, 1000)), int(rng.integers(1 << 30)),
                             airlight * 0.8)
        image = weather.lens_drops(image, rng, int(rng.integers(0, 12)))
    elif condition == "snow":
        image = weather.fog(image, distance, rng.uniform(0.008, 0.025), np.clip(airlight + 0.08, 0, 1))
        image = weather.snowfall(image, rng, rng.uniform(0.5, 1.5))

    if spec.ego_hood:
        hood, border = _ego_vehicle_masks(size, rng)
        image = _paint_ego_vehicle(image, hood, border, rng)
        labels = labels.copy()
        labels[hood] = EGO_VEHICLE
        labels[border] = RECTIFICATION_BORDER
        distance = distance.copy()
        distance[hood | border] = HOOD_DISTANCE_M

    if condition == "night":
        look = _night_camera(look)
    final = camera_effects(image, look, rng)
    return Frame(r, final, labels, distance, airlight)


def _night_camera(look):
    from dataclasses import replace

    return replace(look, noise=(look.noise[0] * 2.0, look.noise[1] * 2.5), exposure=(0.9, 1.25), blur_px=(0.7, 1.2))


def _ego_vehicle_masks(size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The bonnet: the bottom ≈ 8–13 % of the image under a flat arc; the rectification border: a
    thin wedge along the left and right edges (wider at the bottom) and sometimes the bottom row."""
    height, width = size
    u = (np.arange(width, dtype=np.float32) + 0.5) / width * 2 - 1
    v = np.arange(height, dtype=np.float32)[:, None]
    top = height * (1 - rng.uniform(0.08, 0.13)) + height * rng.uniform(0.03, 0.06) * u ** 2
    hood = v >= top[None, :]
    col = np.arange(width)[None, :]
    left = rng.uniform(0.002, 0.008) * width + rng.uniform(0.0, 0.01) * width * v / height
    right = rng.uniform(0.002, 0.008) * width + rng.uniform(0.0, 0.01) * width * v / height
    border = (col < left) | (col >= width - right)
    if rng.random() < 0.5:
        border |= v >= height - max(1, round(height * 0.004))
    return hood & ~border, border


def _paint_ego_vehicle(image: np.ndarray, hood: np.ndarray, border: np.ndarray, rng) -> np.ndarray:
    """A dark, glossy bonnet reflecting a smeared sky; black rectification border."""
    out = image.copy()
    height = image.shape[0]
    paint = np.array([0.05, 0.06, 0.07], dtype=np.float32) * rng.uniform(0.8, 2.0)
    rows = np.arange(height, dtype=np.float32)[:, None]
    sheen = np.clip(1 - (rows - rows[hood.any(axis=1)].min(initial=height)) / (0.1 * height), 0, 1)[..., None]
    sheen = np.broadcast_to(sheen, image.shape)
    hood_rgb = paint + 0.18 * sheen
    out[hood] = hood_rgb[hood]
    out[border] = 0.02
    return out
