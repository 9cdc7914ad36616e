"""What a MiniCity scene is: a camera, a ground layout and a table of solid primitives.

World frame: x to the right of the street, y up, z along the street (forward). The road is the band
|x| < ``road_half``; raised sidewalks (curb height ≈ 0.13 m) run on both sides, then front yards,
facades and whatever lies behind. Everything above the ground is built from two primitives that a
ray caster can intersect exactly and cheaply: axis-aligned **boxes** and axis-aligned
**ellipsoids**. A car, for example, is a body box, a cabin box and four thin ellipsoid wheels; a
tree is a trunk box and an ellipsoid crown; a person is legs, torso, arms and a head.

Each primitive carries its Cityscapes label id, its SYNTHIA class id, a *material* (what it is made
of, which drives appearance: a car's cabin is glass in the real domains, its wheels are rubber)
and the object it belongs to. Objects carry the instance id (thing classes only) and a few random
numbers ("tint") from which each domain's look draws per-instance colours.

The ground is not a primitive list but a :class:`GroundLayout` (bands across the street, lots and
side streets along it) that the renderer classifies per pixel. Ground materials occupy the first
entries of the primitive table so that every visible pixel points into one table.

What defines a class is kept the same in every domain: geometry (flat vs raised vs vertical, size,
shape) and context (riders sit on two-wheelers on the road, persons stand on sidewalks or walk on
crossings, poles carry lights and signs). Only the statistics in :mod:`.domains` vary. Object
models are in :mod:`.objects`, the sampling of a street in :mod:`.layout`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from udaseg.data.catalog import LABEL_ID_TO_TRAIN_ID, SYNTHIA_ID_TO_TRAIN_ID

BOX, ELLIPSOID, GROUND = 0, 1, 2


class Material(IntEnum):
    """What a surface is made of; the appearance of each domain is a function of this."""

    # ground (the first entries of every scene's primitive table, see GROUND_MATERIALS)
    ROAD = 0
    LANE_MARK = 1
    SIDEWALK = 2
    CURB = 3
    TERRAIN = 4
    BARE_GROUND = 5
    PARKING = 6
    # structures
    FACADE = 7
    WALL = 8
    FENCE = 9
    GUARD_RAIL = 10
    POLE = 11
    LAMP = 12
    TRAFFIC_LIGHT = 13
    SIGN = 14
    TRUNK = 15
    FOLIAGE = 16
    HEDGE = 17
    STATIC = 18
    # people
    SKIN = 19
    HAIR = 20
    TOP = 21
    TROUSERS = 22
    HELMET = 23
    # vehicles
    CAR_BODY = 24
    GLASS = 25
    WHEEL = 26
    CARGO = 27
    BUS_BODY = 28
    TRAM_BODY = 29
    BIKE_FRAME = 30
    MOTO_BODY = 31
    # added in generator 1.1 (appended: the values above are unchanged)
    SIGNAL_BOARD = 32  # a traffic light's backplate (labelled traffic light, like the housing)


# Ground materials and the Cityscapes label id each is annotated with. Lane marks are road in
# Cityscapes/GTA5 but have their own class in SYNTHIA (22, ignored by the 19-class tables).
GROUND_MATERIALS: tuple[tuple[Material, int], ...] = (
    (Material.ROAD, 7),
    (Material.LANE_MARK, 7),
    (Material.SIDEWALK, 8),
    (Material.CURB, 8),
    (Material.TERRAIN, 22),
    (Material.BARE_GROUND, 6),
    (Material.PARKING, 9),
)
SYNTHIA_LANE_MARKING = 22
SYNTHIA_PARKING_SLOT = 13

# Cityscapes label id → SYNTHIA class id, through the shared train ids (catalog tables); void ids
# without a SYNTHIA counterpart become 0 (void).
_TRAIN_ID_TO_SYNTHIA = {t: s for s, t in SYNTHIA_ID_TO_TRAIN_ID.items()}
LABEL_ID_TO_SYNTHIA_ID = np.zeros(256, dtype=np.uint8)
for _label_id, _train_id in LABEL_ID_TO_TRAIN_ID.items():
    LABEL_ID_TO_SYNTHIA_ID[_label_id] = _TRAIN_ID_TO_SYNTHIA.get(_train_id, 0)
LABEL_ID_TO_SYNTHIA_ID[9] = SYNTHIA_PARKING_SLOT

# Cityscapes label ids used below, by name.
ID = {
    "ground": 6, "static": 4, "road": 7, "sidewalk": 8, "parking": 9, "building": 11, "wall": 12,
    "fence": 13, "guard rail": 14, "pole": 17, "traffic light": 19, "traffic sign": 20,
    "vegetation": 21, "terrain": 22, "sky": 23, "person": 24, "rider": 25, "car": 26, "truck": 27,
    "bus": 28, "train": 31, "motorcycle": 32, "bicycle": 33,
}
THING_LABEL_IDS = frozenset((24, 25, 26, 27, 28, 29, 30, 31, 32, 33))


# ---------------------------------------------------------------------------------------------
@dataclass
class Camera:
    """Pinhole camera. Rays are expressed in world coordinates with unit camera-z component, so the
    ray parameter t of a hit *is* its z-depth; distance along the ray is t·|ray|."""

    height: int
    width: int
    focal: float
    cx: float
    cy: float
    position: np.ndarray  # (3,) world
    rotation: np.ndarray  # (3, 3) camera → world; columns: right, up, forward

    @staticmethod
    def looking(height: int, width: int, focal: float, cx: float, cy: float, position, pitch: float,
                yaw: float, roll: float) -> Camera:
        """Camera at ``position`` with pitch (down positive), yaw (right positive), roll (radians)."""
        cp, sp = math.cos(pitch), math.sin(pitch)
        cy_, sy = math.cos(yaw), math.sin(yaw)
        cr, sr = math.cos(roll), math.sin(roll)
        r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        r_yaw = np.array([[cy_, 0, sy], [0, 1, 0], [-sy, 0, cy_]])
        r_roll = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        return Camera(height, width, focal, cx, cy, np.asarray(position, dtype=np.float64),
                      r_yaw @ r_pitch @ r_roll)

    def rays(self) -> np.ndarray:
        """(3, H, W) float32 world ray directions through pixel centres."""
        u = (np.arange(self.width, dtype=np.float32) + 0.5 - self.cx) / self.focal
        v = -(np.arange(self.height, dtype=np.float32) + 0.5 - self.cy) / self.focal
        rot = self.rotation.astype(np.float32)
        return (rot[:, 0, None, None] * u[None, None, :] + rot[:, 1, None, None] * v[None, :, None]
                + rot[:, 2, None, None])

    def to_camera(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) world points → (N, 3) camera coordinates (x right, y up, z forward)."""
        return (points - self.position) @ self.rotation

    def project(self, points_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame points (z > 0) → pixel coordinates (u, v)."""
        z = points_cam[:, 2]
        return self.cx + self.focal * points_cam[:, 0] / z, self.cy - self.focal * points_cam[:, 1] / z

    def intrinsics(self) -> dict:
        return {"fx": round(self.focal, 3), "fy": round(self.focal, 3), "cx": round(self.cx, 3),
                "cy": round(self.cy, 3)}


@dataclass
class GroundLayout:
    """The ground, classified per pixel by the renderer. Sides are indexed 0 = left (x < 0),
    1 = right. Distances are metres from the street centre line."""

    road_half: float
    curb_height: float
    strip_width: tuple[float, float]  # grass strip between curb and sidewalk
    sidewalk_width: tuple[float, float]
    lot_starts: tuple[np.ndarray, np.ndarray]  # z where each lot starts (sorted)
    lot_front: tuple[np.ndarray, np.ndarray]  # ground material of each lot's front zone
    side_streets: list[tuple[int, float, float, float]] = field(default_factory=list)  # side, z0, z1, rim
    lane_lines: list[tuple[float, float, bool]] = field(default_factory=list)  # x, width, dashed
    crosswalks: list[tuple[float, float]] = field(default_factory=list)  # z0, z1 across the road
    parking_bays: list[tuple[int, float, float, float]] = field(default_factory=list)  # side, z0, z1, width
    rails: list[float] = field(default_factory=list)  # x of tram rails (drawn as marks)

    def ground_height(self, x: float, z: float) -> float:
        return self.curb_height if self.is_raised(np.array([x]), np.array([z]))[0] else 0.0

    def is_raised(self, x: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Raised (sidewalk level) everywhere beyond the curbs, except on side-street roads."""
        raised = np.abs(x) > self.road_half
        for side, z0, z1, rim in self.side_streets:
            on_side = (x > self.road_half) if side == 1 else (x < -self.road_half)
            raised &= ~(on_side & (z > z0 + rim) & (z < z1 - rim))
        return raised


@dataclass
class SceneObject:
    kind: str
    instance: int  # 0 for stuff
    tint: np.ndarray  # (4,) uniform random numbers; the look maps them to colours
    heading: int = 0  # 0: +z (seen from behind), 1: −z (front), 2: +x, 3: −x
    light: bool = False  # carries a light source at night (lamps, vehicles)


@dataclass
class Scene:
    camera: Camera
    ground: GroundLayout
    kind: np.ndarray  # (N,) BOX / ELLIPSOID / GROUND
    geometry: np.ndarray  # (N, 6) box lo|hi, or ellipsoid centre|radii (unused for ground)
    label: np.ndarray  # (N,) Cityscapes label id
    material: np.ndarray  # (N,)
    object_index: np.ndarray  # (N,) index into objects, −1 for ground
    objects: list[SceneObject]
    sun: np.ndarray  # (3,) unit vector towards the sun
    domain: str

    @property
    def synthia_label(self) -> np.ndarray:
        ids = LABEL_ID_TO_SYNTHIA_ID[self.label]
        ids[self.material == Material.LANE_MARK] = SYNTHIA_LANE_MARKING
        return ids

    @property
    def instance(self) -> np.ndarray:
        inst = np.array([o.instance for o in self.objects] + [0], dtype=np.int32)
        return inst[self.object_index]  # −1 → the appended 0


# ---------------------------------------------------------------------------------------------
class SceneBuilder:
    """Accumulates primitives and objects while a scene is sampled."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.kind: list[int] = []
        self.geometry: list[tuple[float, ...]] = []
        self.label: list[int] = []
        self.material: list[int] = []
        self.object_index: list[int] = []
        self.objects: list[SceneObject] = []
        self.next_instance = 1
        for material, label_id in GROUND_MATERIALS:
            self._add(GROUND, (0,) * 6, label_id, material, -1)

    def new_object(self, kind: str, label_id: int, heading: int = 0, light: bool = False) -> int:
        instance = 0
        if label_id in THING_LABEL_IDS:
            instance, self.next_instance = self.next_instance, self.next_instance + 1
        self.objects.append(SceneObject(kind, instance, self.rng.random(4), heading, light))
        return len(self.objects) - 1

    def _add(self, kind, geometry, label_id, material, obj) -> None:
        self.kind.append(kind)
        self.geometry.append(tuple(float(g) for g in geometry))
        self.label.append(label_id)
        self.material.append(int(material))
        self.object_index.append(obj)

    def box(self, obj: int, label_id: int, material: Material, lo, hi) -> None:
        self._add(BOX, (*lo, *hi), label_id, material, obj)

    def ellipsoid(self, obj: int, label_id: int, material: Material, centre, radii) -> None:
        self._add(ELLIPSOID, (*centre, *radii), label_id, material, obj)

    def oriented_box(self, obj, label_id, material, anchor, heading, along, across, y0, y1) -> None:
        """Box in an object's frame: ``along`` (a0, a1) metres along its heading and ``across``
        (c0, c1) to its right, from ``anchor`` (x, z) on the ground."""
        ax, az = anchor
        a0, a1 = along
        c0, c1 = across
        if heading == 0:  # +z
            lo, hi = (ax + c0, y0, az + a0), (ax + c1, y1, az + a1)
        elif heading == 1:  # −z: forward is −z, right is −x
            lo, hi = (ax - c1, y0, az - a1), (ax - c0, y1, az - a0)
        elif heading == 2:  # +x: right is −z
            lo, hi = (ax + a0, y0, az - c1), (ax + a1, y1, az - c0)
        else:  # −x: right is +z
            lo, hi = (ax - a1, y0, az + c0), (ax - a0, y1, az + c1)
        self.box(obj, label_id, material, lo, hi)

    def oriented_ellipsoid(self, obj, label_id, material, anchor, heading, along, across, y, radii) -> None:
        """Ellipsoid centred ``along`` / ``across`` / ``y`` in the object frame; radii given as
        (along, up, across)."""
        ax, az = anchor
        r_along, r_up, r_across = radii
        if heading in (0, 1):
            sign = 1 if heading == 0 else -1
            centre = (ax + sign * across, y, az + sign * along)
            rad = (r_across, r_up, r_along)
        else:
            sign = 1 if heading == 2 else -1
            centre = (ax + sign * along, y, az - sign * across)
            rad = (r_along, r_up, r_across)
        self.ellipsoid(obj, label_id, material, centre, rad)

    def build(self, camera, ground, sun, domain) -> Scene:
        return Scene(
            camera=camera, ground=ground,
            kind=np.array(self.kind, dtype=np.int8),
            geometry=np.array(self.geometry, dtype=np.float64).reshape(-1, 6),
            label=np.array(self.label, dtype=np.uint8),
            material=np.array(self.material, dtype=np.uint8),
            object_index=np.array(self.object_index, dtype=np.int32),
            objects=self.objects, sun=sun, domain=domain,
        )
