"""How each domain looks: per-class palettes, textures, lighting, sky and camera effects.

The domain shift MiniCity needs is *class-conditional and structural*, like GTA5 → Cityscapes: a
global colour change is undone by colour-jitter augmentation, so here every material moves
differently between domains (GTA roads are dark and its sidewalks much lighter; in the real
domains the two are close greys told apart by texture, curb and position; GTA vegetation and grass
are saturated greens, real ones olive and brown; GTA cars and clothes are mostly saturated, real
ones mostly black, grey and white), and the real domains carry detail the simulators lack:

* asphalt grain, wear, patches and tyre tracks; paving joints on sidewalks; grass texture;
* window grids and shop fronts on facades; leaves on trees and hedges;
* car windows, tyres with rims, lights; lit lamps in traffic lights; sign faces with borders;
* directional light with soft cast shadows (from sunny to overcast per frame) and ambient
  occlusion at the foot of walls;
* lens blur, sensor noise, vignetting, white balance and exposure changes, JPEG artefacts.

The simulated domains are flat-shaded (one colour per face), saturated, noise-free and sharp; GTA
and SYNTHIA also differ from each other (GTA: sunny, warm, saturated; SYNTHIA: pale, cool, even
light). Geometry and labels are never touched here.

The strength of each difference was calibrated (generator 1.0, default scale at 128×256) with a
small from-scratch CNN evaluated on Cityscapes val, mIoU19: oracle (Cityscapes train) 0.60, GTA
source-only 0.27 (0.45×), with colour jitter + blur 0.28, DACS-style self-training 0.32; SYNTHIA
source-only 0.17. A gap that augmentation does not close but adaptation can; pretrained models
should transfer somewhat better than this small net.

Colours are specified in sRGB 0–255 and processed as floats in [0, 1]. Per-instance variation
comes from each object's ``tint`` random numbers, so an object's colour is fixed by the scene and
reproducible. All randomness comes from the frame's generator.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from udaseg.data.minicity import weather
from udaseg.data.minicity.render import Render, ground_shadow
from udaseg.data.minicity.scene import BOX
from udaseg.data.minicity.scene import Material as M


@dataclass(frozen=True)
class Look:
    name: str
    # Material → choices; one is picked per object by its tint. A choice is an sRGB colour, or an
    # HSV range ("hue", (s_lo, s_hi), (v_lo, v_hi)) for freely coloured things (cars, clothes).
    palette: dict
    jitter: float  # per-instance brightness variation (fraction)
    skies: tuple  # ((zenith, horizon), ...) sRGB; one is picked per frame
    clouds: float  # 0 = clear sky
    textures: bool  # the real domains' fine detail
    ambient: float
    diffuse: float
    shadow: tuple[float, float]  # cast-shadow darkening, per frame (sunny to overcast); (0, 0) = none
    glass_as_body: bool  # simulators: cabins and windows drawn in the body colour
    blur_px: tuple[float, float]  # Gaussian sigma at width 512
    noise: tuple[float, float]  # sensor noise sigma (/255)
    jpeg_quality: tuple[int, int] | None
    vignetting: float
    white_balance: float  # per-channel gain jitter
    exposure: tuple[float, float]
    saturation: float = 1.0
    gamma: float = 1.0
    city_styles: int = 1  # real domains: a few facade palettes that vary by city
    ground_variation: float = 0.0  # simulators: smooth metre-scale tone variation of the ground


def _hue(s: tuple[float, float], v: tuple[float, float]):
    return ("hue", s, v)


_GREYS = ((30, 30, 32), (70, 72, 76), (158, 160, 164), (212, 212, 208))

_GTA = {
    M.ROAD: ((76, 76, 84),), M.LANE_MARK: ((232, 232, 224), (226, 190, 62)), M.SIDEWALK: ((166, 156, 142),),
    M.CURB: ((192, 186, 176),), M.TERRAIN: ((140, 160, 72), (128, 150, 64)), M.BARE_GROUND: ((160, 130, 96),),
    M.PARKING: ((86, 84, 92),),
    M.FACADE: ((192, 160, 122), (172, 104, 80), (208, 200, 178), (128, 138, 160), (166, 166, 160), (214, 186, 144)),
    M.WALL: ((198, 188, 168), (174, 166, 156)), M.FENCE: ((130, 108, 82), (150, 150, 150)),
    M.GUARD_RAIL: ((180, 180, 180),), M.POLE: ((104, 106, 114),), M.LAMP: ((210, 210, 196),),
    M.TRAFFIC_LIGHT: ((52, 60, 36),), M.SIGNAL_BOARD: ((34, 38, 28),),
    M.SIGN: ((28, 84, 204), (214, 38, 38), (238, 238, 238), (236, 200, 36)),
    M.TRUNK: ((104, 78, 52),), M.FOLIAGE: ((56, 124, 40), (72, 136, 44)), M.HEDGE: ((52, 114, 40),),
    M.STATIC: ((92, 92, 98), (146, 112, 78), (58, 104, 58)),
    M.SKIN: ((228, 182, 140), (176, 122, 84), (112, 76, 54)), M.HAIR: ((44, 32, 24), (116, 82, 44), (22, 22, 22)),
    M.TOP: (_hue((0.4, 0.9), (0.35, 0.9)), _hue((0.4, 0.9), (0.35, 0.9)), (40, 40, 44), (150, 150, 146)),
    M.TROUSERS: ((42, 62, 126), (52, 52, 58), (156, 134, 100)), M.HELMET: (_hue((0.6, 1.0), (0.5, 0.95)),),
    M.CAR_BODY: (_hue((0.55, 1.0), (0.35, 0.95)), _hue((0.55, 1.0), (0.35, 0.95))) + _GREYS,
    M.GLASS: ((40, 60, 90),), M.WHEEL: ((36, 36, 38),),
    M.CARGO: ((238, 238, 236), (206, 60, 38), (60, 92, 166)),
    M.BUS_BODY: ((226, 182, 38), (206, 50, 38), (46, 146, 70), (232, 232, 226)),
    M.TRAM_BODY: ((214, 44, 38), (242, 242, 236)), M.BIKE_FRAME: (_hue((0.6, 1.0), (0.4, 0.9)),),
    M.MOTO_BODY: (_hue((0.6, 1.0), (0.4, 0.9)),),
}

_SYNTHIA = {
    M.ROAD: ((98, 94, 92),), M.LANE_MARK: ((244, 244, 244),), M.SIDEWALK: ((164, 164, 172),),
    M.CURB: ((200, 200, 206),), M.TERRAIN: ((120, 150, 90),), M.BARE_GROUND: ((150, 136, 120),),
    M.PARKING: ((112, 106, 104),),
    M.FACADE: ((214, 204, 188), (194, 172, 150), (160, 152, 144), (204, 192, 204), (176, 190, 200)),
    M.WALL: ((196, 196, 190), (170, 160, 150)), M.FENCE: ((110, 120, 130), (170, 150, 120)),
    M.GUARD_RAIL: ((190, 190, 190),), M.POLE: ((130, 134, 140),), M.LAMP: ((220, 220, 220),),
    M.TRAFFIC_LIGHT: ((70, 70, 74),), M.SIGNAL_BOARD: ((52, 52, 56),),
    M.SIGN: ((60, 110, 200), (220, 80, 80), (240, 240, 240)),
    M.TRUNK: ((120, 100, 80),), M.FOLIAGE: ((90, 128, 64), (104, 138, 70)), M.HEDGE: ((88, 124, 62),),
    M.STATIC: ((120, 120, 126), (170, 140, 110)),
    M.SKIN: ((236, 196, 164), (190, 140, 104)), M.HAIR: ((70, 56, 44), (150, 120, 80)),
    M.TOP: (_hue((0.3, 0.65), (0.45, 0.95)),), M.TROUSERS: (_hue((0.2, 0.5), (0.25, 0.7)),),
    M.HELMET: (_hue((0.3, 0.7), (0.6, 0.95)),),
    M.CAR_BODY: (_hue((0.3, 0.7), (0.45, 0.95)), _hue((0.3, 0.7), (0.45, 0.95)), (60, 62, 66), (200, 200, 200)),
    M.GLASS: ((70, 90, 110),), M.WHEEL: ((60, 60, 64),),
    M.CARGO: ((220, 220, 220),), M.BUS_BODY: ((90, 150, 210), (230, 140, 60), (200, 200, 200)),
    M.TRAM_BODY: ((200, 200, 210),), M.BIKE_FRAME: (_hue((0.3, 0.7), (0.4, 0.9)),),
    M.MOTO_BODY: (_hue((0.3, 0.7), (0.4, 0.9)),),
}

# The "real" palette (Cityscapes, ACDC): desaturated, overcast. Road and sidewalk are closer in
# colour than in the simulators (texture, curb and position tell them apart).
_REAL = {
    M.ROAD: ((108, 104, 110),), M.LANE_MARK: ((196, 196, 190),), M.SIDEWALK: ((146, 140, 130),),
    M.CURB: ((160, 156, 150),), M.TERRAIN: ((112, 126, 66), (122, 122, 78)), M.BARE_GROUND: ((112, 100, 84),),
    M.PARKING: ((108, 104, 104),),
    M.FACADE: ((160, 150, 134), (132, 120, 108), (184, 178, 166), (142, 96, 80), (118, 122, 128), (170, 158, 126)),
    M.WALL: ((138, 134, 128), (118, 108, 98), (150, 140, 120)), M.FENCE: ((88, 94, 90), (118, 108, 88), (70, 74, 78)),
    M.GUARD_RAIL: ((160, 162, 160),), M.POLE: ((86, 88, 90), (110, 112, 110)), M.LAMP: ((150, 150, 145),),
    M.TRAFFIC_LIGHT: ((32, 33, 34),), M.SIGNAL_BOARD: ((22, 22, 24), (34, 34, 34)),
    M.SIGN: ((230, 230, 226), (40, 80, 160), (236, 196, 40)),
    M.TRUNK: ((70, 62, 52),), M.FOLIAGE: ((66, 98, 44), (78, 106, 50), (60, 88, 44)), M.HEDGE: ((62, 92, 42),),
    M.STATIC: ((90, 92, 94), (60, 80, 60), (130, 120, 100)),
    M.SKIN: ((208, 164, 134), (156, 110, 82), (96, 66, 50)), M.HAIR: ((40, 32, 26), (96, 74, 50), (150, 130, 100)),
    M.TOP: (_hue((0.0, 0.35), (0.08, 0.55)), _hue((0.0, 0.35), (0.08, 0.55)), _hue((0.3, 0.7), (0.3, 0.8))),
    M.TROUSERS: ((34, 38, 52), (30, 30, 32), (84, 80, 74)), M.HELMET: (_hue((0.0, 0.5), (0.1, 0.8)),),
    M.CAR_BODY: _GREYS + _GREYS + ((34, 44, 70), (124, 30, 30), _hue((0.3, 0.8), (0.3, 0.8))),
    M.GLASS: ((36, 44, 52),), M.WHEEL: ((22, 22, 22),),
    M.CARGO: ((212, 212, 206), (152, 152, 150), (170, 50, 40)),
    M.BUS_BODY: ((226, 222, 208), (196, 176, 56), (168, 40, 40)),
    M.TRAM_BODY: ((228, 228, 222), (208, 178, 40), (40, 90, 150)),
    M.BIKE_FRAME: ((30, 30, 30), (60, 60, 60), (140, 30, 30)),
    M.MOTO_BODY: ((26, 26, 28), (120, 120, 124), (150, 30, 30)),
}

LOOKS: dict[str, Look] = {
    "gta": Look(
        "gta", _GTA, jitter=0.08, clouds=0.25,
        skies=(((70, 132, 222), (168, 200, 238)), ((70, 132, 222), (168, 200, 238)),  # clear, clear,
               ((110, 150, 206), (196, 212, 232)), ((150, 168, 192), (212, 216, 224))),  # hazy, overcast
        textures=False, ambient=0.55, diffuse=0.6, shadow=(0.0, 0.0), glass_as_body=True, blur_px=(0.0, 0.0),
        noise=(0.0, 0.0), jpeg_quality=None, vignetting=0.0, white_balance=0.05, exposure=(0.85, 1.15),
        saturation=1.1, ground_variation=0.25,
    ),
    "synthia": Look(
        "synthia", _SYNTHIA, jitter=0.1, clouds=0.0,
        skies=(((176, 196, 222), (222, 228, 236)), ((120, 160, 214), (200, 216, 236)),
               ((150, 160, 176), (200, 204, 212))),
        textures=False, ambient=0.66, diffuse=0.4, shadow=(0.0, 0.0), glass_as_body=True, blur_px=(0.0, 0.0),
        noise=(0.0, 0.0), jpeg_quality=None, vignetting=0.0, white_balance=0.06, exposure=(0.7, 1.1),
        ground_variation=0.2,
    ),
    "cityscapes": Look(
        "cityscapes", _REAL, jitter=0.12, clouds=0.6,
        skies=(((188, 196, 208), (222, 226, 230)), ((200, 204, 210), (230, 230, 232)),
               ((140, 166, 200), (206, 214, 224))),
        textures=True, ambient=0.62, diffuse=0.45, shadow=(0.0, 0.32), glass_as_body=False, blur_px=(0.5, 0.9),
        noise=(1.0, 3.0), jpeg_quality=(72, 92), vignetting=0.25, white_balance=0.06, exposure=(0.85, 1.1),
        saturation=0.9, gamma=1.04, city_styles=3,
    ),
}
LOOKS["acdc"] = replace(
    LOOKS["cityscapes"], name="acdc", blur_px=(0.4, 0.8), noise=(2.0, 4.0), vignetting=0.35, saturation=0.95,
    gamma=1.0, skies=(((178, 190, 206), (222, 226, 230)), ((150, 172, 204), (210, 216, 226))),
    palette={**_REAL, M.FACADE: ((196, 186, 160), (170, 160, 140), (214, 206, 188), (150, 110, 90), (128, 132, 140)),
             M.TRAM_BODY: ((40, 90, 160), (228, 228, 222))},
)


# ---------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=4)
def noise_tiles(size: int = 256) -> np.ndarray:
    """(4, size, size) float32 periodic noise in [0, 1] from a fixed seed: fine grain, medium,
    blotchy, large-scale. Periodic (built in the Fourier domain) so textures tile seamlessly; a
    fixed seed keeps every worker process identical, which keeps generation deterministic."""
    rng = np.random.default_rng(20240611)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.fftfreq(size)[None, :]
    radius = np.sqrt(fx ** 2 + fy ** 2)
    radius[0, 0] = 1.0
    tiles = []
    for cutoff, exponent in ((0.5, 0.0), (0.12, 1.5), (0.04, 2.0), (0.012, 2.5)):
        spectrum = np.fft.fft2(rng.standard_normal((size, size)))
        spectrum *= np.exp(-(radius / cutoff) ** 2) / radius ** (exponent / 2)
        spectrum[0, 0] = 0
        tile = np.real(np.fft.ifft2(spectrum))
        tile = (tile - tile.mean()) / (tile.std() * 6) + 0.5
        tiles.append(np.clip(tile, 0, 1).astype(np.float32))
    return np.stack(tiles)


FINE, MEDIUM, BLOTCH, LARGE = range(4)


def _sample(tile: int, u: np.ndarray, v: np.ndarray, texels_per_m: float) -> np.ndarray:
    t = noise_tiles()[tile]
    n = t.shape[0] - 1
    return t[(v * texels_per_m).astype(np.int64) & n, (u * texels_per_m).astype(np.int64) & n]


def _hash(*ints: np.ndarray) -> np.ndarray:
    """Cheap deterministic per-cell random number in [0, 1) (e.g. per paving stone)."""
    h = np.zeros(ints[0].shape, dtype=np.uint64)
    for k, a in enumerate(ints):
        h ^= (a.astype(np.int64).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15 + k)) * np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(0x1000000)


def _hsv_to_rgb(h: float, s: float, v: float) -> tuple[float, float, float]:
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]


# ---------------------------------------------------------------------------------------------
@dataclass
class Shaded:
    """A shaded frame before camera effects, with what weather needs to know about it."""

    image: np.ndarray  # (H, W, 3) float32, 0..1 (may exceed 1 at light sources)
    emission: np.ndarray  # (H, W, 3) float32: light sources (traffic lights, car lights, lamps)
    lights: list[tuple[np.ndarray, np.ndarray, float]] = field(default_factory=list)  # (position, rgb, range)


def primitive_colours(r: Render, look: Look, style: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Base colour per primitive, (N, 3), and body colour per object, (n_objects + 1, 3).

    The look's palette entry for a primitive's material is chosen and varied per object by the
    object's tint (all parts of one object made of one material share a colour); ground materials
    vary per frame. Only visible primitives (and vehicle bodies, whose colour other parts reuse)
    are coloured. The simulators paint windows and wheels in darker body colour instead of glass
    and rubber."""
    scene = r.scene
    n = len(scene.kind)
    colours = np.zeros((n, 3), dtype=np.float32)
    frame_tint = rng.random((n, 4))
    visible = np.zeros(n, dtype=bool)
    visible[np.unique(r.prim[r.prim >= 0])] = True
    visible |= np.isin(scene.material, _BODY_MATERIALS)
    cache: dict[tuple[int, int], np.ndarray] = {}
    for i in np.flatnonzero(visible):
        material = M(int(scene.material[i]))
        obj = int(scene.object_index[i])
        if obj >= 0 and (obj, material) in cache:
            colours[i] = cache[obj, material]
            continue
        tint = scene.objects[obj].tint if obj >= 0 else frame_tint[i]
        entry = look.palette[material]
        if material == M.FACADE and look.city_styles > 1:
            # City style: each city favours part of the facade palette.
            start = (style + int(tint[0] * 3)) % len(entry)
            entry = (entry[start:] + entry[:start])[:max(2, len(entry) // 2)]
        pick = tint[0] * len(entry)
        choice = entry[int(pick) % len(entry)]
        if choice[0] == "hue":  # the hue comes from the fraction left over by the pick
            _, s_range, v_range = choice
            rgb = np.array(_hsv_to_rgb(float(pick % 1.0), s_range[0] + tint[1] * (s_range[1] - s_range[0]),
                                       v_range[0] + tint[2] * (v_range[1] - v_range[0])), dtype=np.float32)
        else:
            rgb = np.array(choice, dtype=np.float32) / 255.0
            rgb = rgb * (1.0 + look.jitter * (2 * tint[1] - 1)) + look.jitter * 0.3 * (tint[2:4].mean() - 0.5)
        colours[i] = np.clip(rgb, 0, 1)
        if obj >= 0:
            cache[obj, material] = colours[i]
    body = np.full((len(scene.objects) + 1, 3), 0.3, dtype=np.float32)  # last row: no object
    for i in np.flatnonzero(np.isin(scene.material, _BODY_MATERIALS)):
        body[scene.object_index[i]] = colours[i]
    if look.glass_as_body:
        for material, factor in ((M.GLASS, 0.72), (M.WHEEL, 0.45)):
            idx = np.flatnonzero((scene.material == material) & (scene.object_index >= 0))
            colours[idx] = body[scene.object_index[idx]] * factor
    return colours, body


_BODY_MATERIALS = (M.CAR_BODY, M.BUS_BODY, M.TRAM_BODY, M.MOTO_BODY, M.CARGO)


def sky_colour(r: Render, look: Look, rng: np.random.Generator, zenith=None, horizon=None) -> np.ndarray:
    """(K, 3) colours of the K sky pixels: a gradient with elevation and, for cloudy looks, clouds
    on a plane high above the street."""
    rays = r.rays[:, r.sky]
    elevation = np.clip(rays[1] / np.sqrt((rays ** 2).sum(axis=0)), -0.2, 1.0)
    if zenith is None:
        zenith, horizon = look.skies[int(rng.integers(len(look.skies)))]
    zenith = np.array(zenith, dtype=np.float32) / 255
    horizon = np.array(horizon, dtype=np.float32) / 255
    w = np.clip(elevation / 0.45, 0, 1)[:, None] ** 0.7
    sky = horizon * (1 - w) + zenith * w
    if look.clouds > 0:
        y = np.maximum(rays[1], 0.02)
        u = rays[0] / y * 60 + rng.uniform(0, 1000)
        v = rays[2] / y * 60 + rng.uniform(0, 1000)
        cover = rng.uniform(0.2, 1.0) * look.clouds
        c = _sample(LARGE, u, v, 0.4) * 0.6 + _sample(BLOTCH, u, v, 1.0) * 0.4
        c = np.clip((c - (0.62 - 0.25 * cover)) * 5, 0, 1)[:, None] * cover
        cloud_rgb = np.array([0.93, 0.93, 0.95], dtype=np.float32) * rng.uniform(0.85, 1.05)
        sky = sky * (1 - c) + cloud_rgb * c
    return sky.astype(np.float32)


def shade(r: Render, look: Look, rng: np.random.Generator, style: int = 0, condition: str = "clear") -> Shaded:
    """Colour every pixel of a rendered scene with ``look``. ``condition`` changes the lighting and
    surfaces (overcast for fog/rain/snow, wet ground for rain, snow cover, night lighting), while
    image-space weather (fog, streaks, flakes) is added later by :mod:`.weather`."""
    scene = r.scene
    height, width = r.prim.shape
    prim_rgb, body_rgb = primitive_colours(r, look, style, rng)
    sky = r.sky
    image = prim_rgb[np.where(sky, 0, r.prim)]  # sky pixels overwritten below
    materials = r.materials()
    points = r.finite_points()
    normals = r.normals()
    emission = np.zeros_like(image)
    if look.textures:
        _textures(r, image, emission, materials, points, normals, body_rgb, rng, look, night=condition == "night")
    else:
        _simulator_details(r, image, materials, points, look)

    lights = _light_sources(r)
    if condition == "night":
        image *= weather.night_illumination(points, normals, lights, scene.camera.position, rng)
        image = weather.bloom(image, emission, strength=rng.uniform(0.6, 1.1))
        sky_rgb = sky_colour(r, replace(look, clouds=0.0), rng, zenith=(4, 6, 14), horizon=(44, 36, 34))
    else:
        sun = scene.sun.astype(np.float32)
        if condition == "clear":
            ambient, diffuse, shadow_strength = look.ambient, look.diffuse, rng.uniform(*look.shadow)
        else:  # fog, rain and snow are overcast: diffuse skylight, no cast shadows
            ambient, diffuse, shadow_strength = 0.8, 0.15, 0.0
            sun = np.array([0.2, 0.9, 0.3], dtype=np.float32) / np.float32(math.sqrt(0.94))
        light = ambient + diffuse * np.clip(sun[0] * normals[0] + sun[1] * normals[1] + sun[2] * normals[2], 0, 1)
        if shadow_strength > 0:
            shadow = cv2.GaussianBlur(ground_shadow(r), (0, 0), max(0.6, width / 700))
            light = light * (1 - shadow_strength * shadow)
        if look.textures:  # ambient occlusion at the foot of vertical surfaces
            vertical = np.abs(normals[1]) < 0.5
            occlusion = 1 - 0.25 * np.exp(-np.maximum(points[1], 0) / 0.5)
            light = np.where(vertical & ~sky, light * occlusion, light)
        image *= light[..., None]
        overcast = {"fog": ((196, 198, 200), (214, 214, 214)), "rain": ((120, 126, 134), (160, 164, 170)),
                    "snow": ((186, 190, 198), (216, 218, 222))}.get(condition, (None, None))
        sky_rgb = sky_colour(r, look, rng, *overcast)
    if condition == "snow":
        _snow_cover(r, image, materials, points, normals)
    if condition == "rain":
        _wet_ground(r, image, materials, points)
    image[sky] = sky_rgb
    return Shaded(image, emission, lights)


# ---------------------------------------------------------------------------------------------
def _box_relative(scene, prim: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(3, K) position of K points inside the bounding box of their primitive, 0..1 per axis."""
    geometry = scene.geometry[prim].T.astype(np.float32)
    lo, hi = geometry[:3], geometry[3:]
    ellipsoid = scene.kind[prim] != BOX
    lo = np.where(ellipsoid, geometry[:3] - geometry[3:], lo)
    hi = np.where(ellipsoid, geometry[:3] + geometry[3:], hi)
    return (points - lo) / np.maximum(hi - lo, 1e-6)


def _face_uv(face: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Texture coordinates on a face: horizontal coordinate along the face, and height."""
    along = np.where(face // 2 == 0, p[2], p[0])
    return along, p[1]


def _simulator_details(r, image, materials, points, look) -> None:
    """Simulated domains get only coarse, clean detail: a lit lamp in traffic lights, and a gentle
    metre-scale tone variation of the ground (game ground textures are smooth, not grainy)."""
    if look.ground_variation > 0:
        ground = materials <= M.PARKING  # the ground materials come first
        variation = _sample(BLOTCH, points[0][ground], points[2][ground], 6.0) - 0.5
        image[ground] *= (1 + look.ground_variation * variation)[:, None]
    mask = materials == M.TRAFFIC_LIGHT
    if mask.any():
        prim = r.prim[mask]
        rel = _box_relative(r.scene, prim, points[:, mask])
        front = r.face[mask] == _lamp_face(r.scene, prim)
        across = np.where(r.face[mask] // 2 == 0, rel[2], rel[0])
        lamp = front & (np.abs(across - 0.5) < 0.3) & (np.abs(rel[1] - 0.82) < 0.1)
        sub = image[mask]
        sub[lamp] = (0.9, 0.25, 0.15) if look.name == "gta" else (0.9, 0.6, 0.3)
        image[mask] = sub


@dataclass
class _Surface:
    """The K pixels of one material, with what texture functions need. ``rgb`` is read and written
    back to the image by :func:`_textures`; ``emission`` is only allocated at night."""

    r: Render
    prim: np.ndarray  # (K,) primitive index
    rgb: np.ndarray  # (K, 3)
    points: np.ndarray  # (3, K) world
    face: np.ndarray  # (K,) face code
    normal_y: np.ndarray  # (K,)
    offset: np.ndarray  # (2,) per-frame texture offset
    stone: float  # paving stone size of this street
    look: Look
    body_rgb: np.ndarray  # body colour per object (windows' pillars)
    emission: np.ndarray | None = None  # (K, 3), at night only

    def relative(self) -> np.ndarray:
        return _box_relative(self.r.scene, self.prim, self.points)

    def objects(self) -> np.ndarray:
        return self.r.scene.object_index[self.prim]


def _textures(r: Render, image, emission, materials, points, normals, body_rgb, rng, look, night: bool) -> None:
    """The real domains' fine detail, material by material. Textures are anchored in world
    coordinates, so they shrink with distance and stay on their surface."""
    offset = rng.uniform(0, 1000, 2).astype(np.float32)
    stone = rng.uniform(0.3, 0.6)  # paving stone size of this street
    # Group pixels by material once (a stable sort), so each texture works on a contiguous slice
    # instead of scanning the whole image with a boolean mask.
    flat_materials = materials.ravel()
    order = np.argsort(flat_materials, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(flat_materials, minlength=256))])
    rgb = image.reshape(-1, 3)[order]
    pts = points.reshape(3, -1)[:, order]
    prim, face, normal_y = r.prim.ravel()[order], r.face.ravel()[order], normals[1].ravel()[order]
    glow = np.zeros_like(rgb) if night else None
    for material, texture in _TEXTURES.items():
        a, b = bounds[material], bounds[material + 1]
        if a == b:
            continue
        surface = _Surface(r, prim[a:b], rgb[a:b], pts[:, a:b], face[a:b], normal_y[a:b], offset, stone, look,
                           body_rgb, glow[a:b] if glow is not None else None)
        texture(surface, material)
        rgb[a:b] = surface.rgb
    image.reshape(-1, 3)[order] = rgb
    if night:
        emission.reshape(-1, 3)[order] = glow


def _asphalt(s: _Surface, material) -> None:
    """Grain, wear blotches, patches with sharp edges, tyre tracks, manholes; worn lane paint."""
    x, z = s.points[0], s.points[2]
    u, v = x + s.offset[0], z + s.offset[1]
    grain = _sample(FINE, u, v, 40.0) - 0.5
    wear = _sample(LARGE, u, v, 3.0) - 0.5
    patch = _sample(BLOTCH, u, v, 1.2)
    f = 1 + 0.13 * grain + 0.18 * wear
    f *= np.where(patch > 0.63, 0.9, 1.0) * np.where(patch < 0.3, 1.05, 1.0)
    if material == M.ROAD:
        lane_phase = np.mod(x, 3.2) * (1 / 3.2)
        f *= 1 - 0.06 * (np.exp((lane_phase - 0.25) ** 2 * -250) + np.exp((lane_phase - 0.75) ** 2 * -250))
        cell_u, cell_v = np.floor(u / 9), np.floor(v / 17)
        du, dv = u - (cell_u + 0.5) * 9, v - (cell_v + 0.5) * 17
        manhole = du ** 2 + dv ** 2 < 0.36
        if manhole.any():
            f[manhole] *= np.where(_hash(cell_u[manhole], cell_v[manhole]) > 0.8, 0.6, 1.0)
    if material == M.LANE_MARK:  # worn paint shows the asphalt underneath
        road = np.array(s.look.palette[M.ROAD][0], dtype=np.float32) / 255
        keep = np.clip((_sample(MEDIUM, u, v, 12.0) - 0.25) * 3, 0, 1)[:, None]
        s.rgb = s.rgb * keep + road * (1 - keep)
    s.rgb *= f[:, None]


def _paving(s: _Surface, material) -> None:
    """Paving stones: joints, per-stone brightness, dirt."""
    u, v = s.points[0] / s.stone, s.points[2] / s.stone
    fu, fv = u - np.floor(u), v - np.floor(v)
    joint = (np.minimum(fu, 1 - fu) < 0.06) | (np.minimum(fv, 1 - fv) < 0.06)
    per_stone = _hash(np.floor(u), np.floor(v)) - 0.5
    dirt = _sample(BLOTCH, s.points[0] + s.offset[0], s.points[2] + s.offset[1], 2.0) - 0.5
    grain = _sample(FINE, s.points[0], s.points[2], 60.0) - 0.5
    f = (1 + 0.08 * per_stone + 0.15 * dirt + 0.06 * grain) * np.where(joint, 0.8, 1.0)
    s.rgb *= f[:, None]


def _curb(s: _Surface, material) -> None:
    s.rgb *= (1 + 0.2 * (_sample(FINE, s.points[0] + s.points[2], s.points[1], 50.0) - 0.5))[:, None]


def _grass(s: _Surface, material) -> None:
    """Fine green/brown grain with dry patches (bare ground: the same, less contrast)."""
    amp = 0.3 if material == M.TERRAIN else 0.2
    u, v = s.points[0] + s.offset[0], s.points[2] + s.offset[1]
    fine = (_sample(FINE, u, v, 50.0) - 0.5)[:, None]
    k = np.clip((_sample(BLOTCH, u, v, 0.8) - 0.55) * 3, 0, 0.5)[:, None]
    brown = np.array([0.47, 0.41, 0.30], dtype=np.float32)
    s.rgb = (s.rgb * (1 - k) + brown * k) * (1 + amp * fine)


def _facade(s: _Surface, material) -> None:
    """Storeys with window grids and shop fronts, per building; dirt; plain roofs."""
    along, up = _face_uv(s.face, s.points)
    obj = s.objects()
    tints = _object_tints(s.r)[obj]  # (K, 4)
    storey = 2.9 + 0.8 * tints[:, 1]
    spacing = 2.2 + 1.6 * tints[:, 2]
    half_window = spacing * (0.2 + 0.125 * tints[:, 3])
    a = np.mod(along + 7.0 * tints[:, 0], spacing)
    level = np.floor(up / storey)
    sv = up - level * storey
    window = (np.abs(a - spacing / 2) < half_window) & (sv > 0.3 * storey) & (sv < 0.85 * storey) & (level >= 1)
    shop = ((level == 0) & (tints[:, 3] > 0.4) & (up > 0.4) & (up < storey * 0.8)
            & (np.abs(a - spacing / 2) < 0.42 * spacing))
    glass = window | shop
    dirt = (1 + 0.16 * (_sample(BLOTCH, along + s.offset[0], up, 1.5) - 0.5)
            + 0.06 * (_sample(FINE, along, up, 30.0) - 0.5))
    rgb = s.rgb * dirt[:, None]
    # Window panes reflect the sky and the street: a dark, bluish mix with the wall colour.
    reflect = 0.18 + 0.22 * _sample(LARGE, along * 3 + s.offset[1], up * 3, 1.0)
    pane = reflect[:, None] * np.array([0.9, 0.98, 1.1], dtype=np.float32)
    rgb[glass] = 0.65 * pane[glass] + 0.35 * rgb[glass]
    roof = s.face // 2 == 1
    rgb[roof] = s.rgb[roof] * 0.7
    s.rgb = rgb
    if s.emission is not None:  # some windows are lit at night
        lit = glass & (_hash(np.floor(along / spacing), level, obj) > 0.7)
        s.emission[lit] = (1.0, 0.8, 0.5)


def _wall(s: _Surface, material) -> None:
    """Concrete, or brick courses."""
    along, up = _face_uv(s.face, s.points)
    brick = (_hash(s.prim) > 0.5) & (np.mod(up, 0.075) < 0.011)
    s.rgb *= ((1 + 0.25 * (_sample(MEDIUM, along, up, 8.0) - 0.5)) * np.where(brick, 0.8, 1.0))[:, None]


def _fence(s: _Surface, material) -> None:
    """Mesh wires over a darker, see-through-looking background."""
    along, up = _face_uv(s.face, s.points)
    mesh = (np.mod(along, 0.12) < 0.03) | (np.mod(up, 0.12) < 0.03)
    s.rgb *= np.where(mesh, 1.15, 0.55)[:, None]


def _leaves(s: _Surface, material) -> None:
    """Leaf clumps with dark gaps, slightly varying hue, darker underneath."""
    scale = 9.0 if material == M.FOLIAGE else 14.0
    u = s.points[0] + s.points[2] * 0.7 + s.offset[0]
    v = s.points[1] + s.offset[1]
    leaves = _sample(MEDIUM, u, v, scale)
    fine = _sample(FINE, u, v, scale * 3)
    f = (0.7 + 0.6 * leaves * (0.8 + 0.4 * fine)) * np.where(leaves < 0.32, 0.7, 1.0)
    f *= 0.8 + 0.2 * np.clip(s.normal_y + 0.5, 0, 1)
    hue = np.stack([1 + 0.15 * (fine - 0.5), 1 + 0.05 * (leaves - 0.5), 1 - 0.1 * (fine - 0.5)], axis=1)
    s.rgb *= f[:, None] * hue


def _bark(s: _Surface, material) -> None:
    s.rgb *= (0.8 + 0.4 * _sample(FINE, s.points[0] + s.points[2], s.points[1] * 0.3, 40.0))[:, None]


def _glass(s: _Surface, material) -> None:
    """Windows: dark, reflecting the sky more towards the top; pillars and the roof in body colour."""
    rel = s.relative()
    across = np.where(s.face // 2 == 0, rel[2], rel[0])
    pillar = (across < 0.06) | (across > 0.94) | ((np.abs(across - 0.5) < 0.025) & (s.face // 2 == 0))
    pillar |= s.face == 3  # the roof
    sky_reflection = 0.1 + 0.35 * np.clip(rel[1], 0, 1) ** 2
    glass = sky_reflection[:, None] * np.array([0.85, 0.95, 1.05], dtype=np.float32)
    glass += 0.06 * (_sample(LARGE, across * 8 + s.offset[0], rel[1] * 4, 1.0) - 0.5)[:, None]
    s.rgb = np.where(pillar[:, None], s.body_rgb[s.objects()], glass)


def _tyre(s: _Surface, material) -> None:
    """Black rubber with a metal rim in the middle of the wheel's flat side."""
    geometry = s.r.scene.geometry[s.prim].T.astype(np.float32)
    centre, radii = geometry[:3], geometry[3:]
    rel = (s.points - centre) / radii
    radial = np.sqrt(rel[1] ** 2 + np.minimum(rel[0] ** 2, rel[2] ** 2))
    s.rgb = np.where((radial < 0.55)[:, None], np.float32(0.5), np.float32(0.09)) * np.ones(3, np.float32)


def _vehicle_body(s: _Surface, material) -> None:
    """Panel shading; cars get tail/head lights, a number plate and a dark bumper at their ends;
    buses and trams a dark band under the windows."""
    rel = s.relative()
    across = np.where(s.face // 2 == 2, rel[0], rel[2])
    rgb = s.rgb * np.where(s.face == 3, 1.12, 1.0)[:, None]
    rgb *= (1 + 0.06 * (_sample(MEDIUM, across * 5 + s.offset[0], rel[1] * 3, 1.0) - 0.5))[:, None]
    if material == M.CAR_BODY:
        headings = np.array([o.heading for o in s.r.scene.objects], dtype=np.int8)[s.objects()]
        back = np.array([4, 5, 0, 1], dtype=np.int8)[headings]  # face code of each heading's rear
        front = back ^ 1
        ends = (s.face == back) | (s.face == front)
        lamp = ends & ((across < 0.16) | (across > 0.84)) & (rel[1] > 0.55) & (rel[1] < 0.85)
        tail = lamp & (s.face == back)
        rgb[tail] = (0.55, 0.05, 0.05)
        rgb[lamp & ~tail] = (0.8, 0.8, 0.75)
        rgb[ends & (np.abs(across - 0.5) < 0.12) & (rel[1] > 0.2) & (rel[1] < 0.38)] = (0.85, 0.85, 0.82)
        rgb[ends & (rel[1] < 0.18)] *= 0.5
        if s.emission is not None:
            s.emission[tail] = (1.0, 0.05, 0.02)
            s.emission[lamp & ~tail] = (1.0, 0.95, 0.8)
    elif material in (M.BUS_BODY, M.TRAM_BODY):
        rgb[(rel[1] > 0.85) & (s.face // 2 == 0)] *= 0.7
    s.rgb = rgb


_LAMP_COLOURS = np.array([[0.2, 1.0, 0.45], [1.0, 0.7, 0.1], [1.0, 0.12, 0.08]], dtype=np.float32)


def _lamp_face(scene, prim: np.ndarray) -> np.ndarray:
    """The box face a signal head's lamps are on: the one its object's heading points to."""
    headings = np.array([o.heading for o in scene.objects] + [1], dtype=np.int8)
    return _HEADING_FACE[headings[scene.object_index[prim]]]


_HEADING_FACE = np.array([5, 4, 1, 0], dtype=np.int8)  # heading +z, −z, +x, −x → face code


def _traffic_light(s: _Surface, material) -> None:
    """Dark housing with three lamps on the face its head faces, one of them lit."""
    rel = s.relative()
    row = np.clip(np.floor(rel[1] * 3), 0, 2)
    across = np.where(s.face // 2 == 0, rel[2], rel[0])
    front = s.face == _lamp_face(s.r.scene, s.prim)
    lamp = front & ((across - 0.5) ** 2 * 4 + (rel[1] * 3 - row - 0.5) ** 2 * 4 < 0.5)
    state = np.floor(_object_tints(s.r)[s.objects(), 3] * 3)
    lit = lamp & (row == state)
    s.rgb[lamp] = 0.08
    s.rgb[lit] = _LAMP_COLOURS[row[lit].astype(int)]
    if s.emission is not None:
        s.emission[lit] = _LAMP_COLOURS[row[lit].astype(int)]


def _signal_board(s: _Surface, material) -> None:
    """A traffic light's backplate: matt black, some with a light border on the front."""
    rel = s.relative()
    across = np.where(s.face // 2 == 0, rel[2], rel[0])
    edge = np.minimum(np.minimum(across, 1 - across), np.minimum(rel[1], 1 - rel[1])) < 0.06
    bordered = _object_tints(s.r)[s.objects(), 2] > 0.5
    s.rgb[edge & bordered & (s.face == _lamp_face(s.r.scene, s.prim))] = 0.75


def _sign(s: _Surface, material) -> None:
    """A red border (rectangular signs) or ring (round signs) on the face; plain metal behind."""
    rel = s.relative()
    border = np.minimum(np.minimum(rel[0], 1 - rel[0]), np.minimum(rel[1], 1 - rel[1])) < 0.1
    round_sign = s.r.scene.kind[s.prim] != BOX
    ring = round_sign & (((rel[0] - 0.5) ** 2 + (rel[1] - 0.5) ** 2) > 0.13)
    s.rgb[(border & ~round_sign) | ring] = (0.85, 0.15, 0.12)
    s.rgb[s.face == 5] = 0.45


def _lamp(s: _Surface, material) -> None:
    if s.emission is not None:
        s.emission[:] = (1.0, 0.85, 0.6)


def _fine_noise(s: _Surface, material) -> None:
    """Cloth, skin, metal: fine grain."""
    s.rgb *= (1 + 0.12 * (_sample(FINE, s.points[0] * 3 + s.points[2], s.points[1] * 3, 30.0) - 0.5))[:, None]


_TEXTURES = {
    M.ROAD: _asphalt, M.PARKING: _asphalt, M.LANE_MARK: _asphalt, M.SIDEWALK: _paving, M.CURB: _curb,
    M.TERRAIN: _grass, M.BARE_GROUND: _grass, M.FACADE: _facade, M.WALL: _wall, M.FENCE: _fence,
    M.FOLIAGE: _leaves, M.HEDGE: _leaves, M.TRUNK: _bark, M.GLASS: _glass, M.WHEEL: _tyre,
    M.CAR_BODY: _vehicle_body, M.BUS_BODY: _vehicle_body, M.TRAM_BODY: _vehicle_body, M.CARGO: _vehicle_body,
    M.TRAFFIC_LIGHT: _traffic_light, M.SIGNAL_BOARD: _signal_board, M.SIGN: _sign, M.LAMP: _lamp,
    **{m: _fine_noise for m in (M.TOP, M.TROUSERS, M.SKIN, M.HAIR, M.HELMET, M.POLE, M.STATIC, M.BIKE_FRAME,
                                M.MOTO_BODY)},
}


def _object_tints(r: Render) -> np.ndarray:
    return np.array([o.tint for o in r.scene.objects] + [[0.5] * 4], dtype=np.float32)


def _snow_cover(r: Render, image, materials, points, normals) -> None:
    """White cover on horizontal surfaces except where traffic keeps the road clear."""
    up = normals[1] > 0.6
    ground_like = np.isin(materials, (M.SIDEWALK, M.TERRAIN, M.BARE_GROUND, M.CURB, M.PARKING))
    road = np.isin(materials, (M.ROAD, M.LANE_MARK))
    x, z = points[0], points[2]
    coverage = np.zeros(materials.shape, dtype=np.float32)
    n = _sample(BLOTCH, x * 1.0 + 7, z * 1.0, 2.0)
    coverage = np.where(ground_like, np.clip(0.75 + (n - 0.5), 0, 1), coverage)
    lane_phase = np.mod(x, 3.2) / 3.2
    tracks = (np.abs(lane_phase - 0.25) < 0.1) | (np.abs(lane_phase - 0.75) < 0.1)
    coverage = np.where(road, np.where(tracks, 0.1, 0.55) * np.clip(n * 1.4, 0, 1), coverage)
    other = ~ground_like & ~road & up & (r.prim >= 7)
    coverage = np.where(other, 0.85, coverage)
    snow = np.array([0.86, 0.88, 0.92], dtype=np.float32) * (0.9 + 0.1 * n[..., None])
    k = coverage[..., None]
    image[:] = image * (1 - k) + snow * k


def _wet_ground(r: Render, image, materials, points) -> None:
    """Wet asphalt: darker, with a blurred mirror image of the scene above it (reflections)."""
    wet = np.isin(materials, (M.ROAD, M.LANE_MARK, M.PARKING, M.SIDEWALK))
    if not wet.any():
        return
    height = image.shape[0]
    rows = np.arange(height)
    # Mirror about the horizon row (a fair approximation for far objects standing on the ground).
    camera = r.scene.camera
    pitch = -math.asin(float(camera.rotation[1, 2]))
    horizon = int(np.clip(camera.cy - camera.focal * math.tan(pitch), 0, height - 1))
    src = np.clip(2 * horizon - rows, 0, height - 1)
    mirrored = cv2.GaussianBlur(image[src], (0, 0), 2.0)
    puddles = _sample(BLOTCH, points[0], points[2], 1.0)
    strength = np.where(wet, 0.18 + 0.3 * np.clip((puddles - 0.45) * 3, 0, 1), 0)[..., None]
    image[:] = np.where(wet[..., None], image * 0.72 * (1 - strength) + mirrored * strength, image)


def _light_sources(r: Render) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Point lights a night scene is lit by: street lamps (warm, wide) and vehicle headlights."""
    scene = r.scene
    lights = []
    for i in np.flatnonzero(scene.material == M.LAMP):
        lo, hi = scene.geometry[i, :3], scene.geometry[i, 3:]
        lights.append(((lo + hi) / 2, np.array([1.0, 0.8, 0.55], dtype=np.float32), 9.0))
    return lights


# ---------------------------------------------------------------------------------------------
def camera_effects(image: np.ndarray, look: Look, rng: np.random.Generator) -> np.ndarray:
    """Exposure, white balance, saturation, vignetting, tone curve, lens blur, sensor noise and a
    JPEG round trip. Returns uint8 RGB."""
    height, width = image.shape[:2]
    gains = rng.uniform(*look.exposure) * (1 + rng.uniform(-look.white_balance, look.white_balance, 3))
    out = image * (gains * 255).astype(np.float32)
    if look.saturation != 1.0:
        grey = out.mean(axis=2, keepdims=True)
        out = grey + (out - grey) * np.float32(look.saturation)
    if look.vignetting > 0:
        out *= _vignette(height, width, look.vignetting)[..., None]
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    if look.gamma != 1.0:
        out = cv2.LUT(out, _tone_curve(look.gamma))
    sigma = rng.uniform(*look.blur_px) * width / 512
    if sigma > 0.05:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise = rng.uniform(*look.noise)
    if noise > 0:
        # Sensor noise, stronger in bright areas (shot noise). A fixed bank of Gaussian noise is
        # cropped at a random offset: much cheaper than drawing fresh noise, equally random.
        bank = _noise_bank(height, width)
        dy, dx = (int(v) for v in rng.integers(0, 64, 2))
        level = (0.6 + 0.8 * np.sqrt(out.astype(np.float32) * np.float32(1 / 255))) * np.float32(noise)
        out = np.clip(out + bank[dy:dy + height, dx:dx + width] * level + 0.5, 0, 255).astype(np.uint8)
    if look.jpeg_quality is not None:
        quality = int(rng.integers(look.jpeg_quality[0], look.jpeg_quality[1] + 1))
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        assert ok and decoded is not None, "OpenCV could not round-trip a frame through JPEG"
        out = decoded[..., ::-1]
    return np.ascontiguousarray(out)


@functools.lru_cache(maxsize=8)
def _vignette(height: int, width: int, strength: float) -> np.ndarray:
    yy = (np.arange(height, dtype=np.float32) - height / 2) / (width / 2)
    xx = (np.arange(width, dtype=np.float32) - width / 2) / (width / 2)
    return 1 - strength * 0.5 * (yy[:, None] ** 2 + xx[None, :] ** 2)


@functools.lru_cache(maxsize=8)
def _tone_curve(gamma: float) -> np.ndarray:
    return np.clip(255 * (np.arange(256) / 255) ** gamma + 0.5, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _noise_bank(height: int, width: int) -> np.ndarray:
    return np.random.default_rng(7).standard_normal((height + 64, width + 64, 3), dtype=np.float32)
