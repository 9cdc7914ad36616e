"""Sampling one metric 3-D street scene: camera, ground layout and a list of solid primitives.

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
crossings, poles carry lights and signs). Only the statistics in :mod:`.domains` vary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import IntEnum

import numpy as np

from udaseg.data.catalog import LABEL_ID_TO_TRAIN_ID, SYNTHIA_ID_TO_TRAIN_ID
from udaseg.data.minicity.domains import DomainSpec

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
                yaw: float, roll: float) -> "Camera":
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
class _Builder:
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


# ---------------------------------------------------------------------------------------------
# Object models. Each takes a builder, a ground anchor (x, z), a heading and a ground height y0.

def add_person(b: _Builder, anchor, heading: int, y0: float, scale: float, label_id: int | None = None,
               obj: int | None = None) -> None:
    """A standing/walking person: two legs, torso, two arms, head (and hair)."""
    rng = b.rng
    child = rng.random() < 0.08
    h = (rng.uniform(1.05, 1.35) if child else rng.uniform(1.55, 1.95)) * scale
    label_id = ID["person"] if label_id is None else label_id
    if obj is None:
        obj = b.new_object("person", label_id, heading)
    stride = rng.uniform(-0.22, 0.22) * h / 1.75
    leg_w, hip_w = 0.13 * h / 1.75, 0.19 * h / 1.75
    torso_w, depth = 0.42 * h / 1.75, 0.24 * h / 1.75
    leg_top = y0 + 0.48 * h
    for side, phase in ((-1, 1.0), (1, -1.0)):
        c = side * hip_w / 2
        a = phase * stride / 2
        b.oriented_box(obj, label_id, Material.TROUSERS, anchor, heading, (a - 0.07, a + 0.07),
                       (c - leg_w / 2, c + leg_w / 2), y0, leg_top + 0.02)
    shoulder = y0 + 0.82 * h
    b.oriented_box(obj, label_id, Material.TOP, anchor, heading, (-depth / 2, depth / 2),
                   (-torso_w / 2, torso_w / 2), leg_top - 0.04, shoulder)
    arm_w = 0.085 * h / 1.75
    for side, phase in ((-1, -1.0), (1, 1.0)):
        c = side * (torso_w / 2 + arm_w / 2)
        a = phase * stride / 3
        b.oriented_box(obj, label_id, Material.TOP, anchor, heading, (a - 0.05, a + 0.05),
                       (c - arm_w / 2, c + arm_w / 2), y0 + 0.47 * h, shoulder)
    head_r = 0.105 * h / 1.75
    b.oriented_ellipsoid(obj, label_id, Material.SKIN, anchor, heading, 0.0, 0.0,
                         shoulder + 0.06 * h + head_r * 0.9, (head_r * 1.1, head_r * 1.2, head_r))
    if rng.random() < 0.7:  # hair / hat on the back of the head
        b.oriented_ellipsoid(obj, label_id, Material.HAIR, anchor, heading, -0.02, 0.0,
                             shoulder + 0.06 * h + head_r * 1.25, (head_r * 1.05, head_r * 0.8, head_r * 1.02))


def add_two_wheeler(b: _Builder, anchor, heading: int, y0: float, scale: float, motorcycle: bool,
                    ridden: bool) -> None:
    """A bicycle or motorcycle (wheels are thin ellipsoids), optionally with its rider."""
    rng = b.rng
    label_id = ID["motorcycle"] if motorcycle else ID["bicycle"]
    vehicle = b.new_object("motorcycle" if motorcycle else "bicycle", label_id, heading,
                           light=motorcycle)
    wheel_r = (0.31 if motorcycle else 0.34) * scale
    wheel_t = 0.12 if motorcycle else 0.04
    base = (1.45 if motorcycle else 1.05) * scale
    for a in (-base / 2, base / 2):
        b.oriented_ellipsoid(vehicle, label_id, Material.WHEEL, anchor, heading, a, 0.0, y0 + wheel_r,
                             (wheel_r, wheel_r, wheel_t / 2))
    if motorcycle:
        b.oriented_box(vehicle, label_id, Material.MOTO_BODY, anchor, heading, (-base / 2 + 0.1, base / 2),
                       (-0.2, 0.2), y0 + 0.35, y0 + 0.9)
        b.oriented_box(vehicle, label_id, Material.BIKE_FRAME, anchor, heading, (base / 2 - 0.15, base / 2),
                       (-0.38, 0.38), y0 + 0.95, y0 + 1.0)  # handlebar
    else:
        b.oriented_box(vehicle, label_id, Material.BIKE_FRAME, anchor, heading, (-base / 2, base / 2),
                       (-0.025, 0.025), y0 + wheel_r, y0 + 0.9)
        b.oriented_box(vehicle, label_id, Material.BIKE_FRAME, anchor, heading, (base / 2 - 0.06, base / 2),
                       (-0.3, 0.3), y0 + 0.98, y0 + 1.02)  # handlebar
    if not ridden:
        return
    rider = b.new_object("rider", ID["rider"], heading)
    h = rng.uniform(1.6, 1.9) * scale
    seat = y0 + (0.85 if motorcycle else 0.95) * scale
    hip_w = 0.2 * h / 1.75
    for side in (-1, 1):  # thighs forward, shins down to the pedals / pegs
        c = side * (hip_w / 2 + (0.1 if motorcycle else 0.0))
        b.oriented_box(rider, ID["rider"], Material.TROUSERS, anchor, heading, (-0.15, 0.25),
                       (c - 0.07, c + 0.07), seat - 0.05, seat + 0.12)
        b.oriented_box(rider, ID["rider"], Material.TROUSERS, anchor, heading, (0.12, 0.26),
                       (c - 0.06, c + 0.06), y0 + 0.3, seat)
    torso_w = 0.42 * h / 1.75
    lean = 0.18 if motorcycle else 0.12
    b.oriented_box(rider, ID["rider"], Material.TOP, anchor, heading, (-0.2 + lean, 0.06 + lean),
                   (-torso_w / 2, torso_w / 2), seat + 0.08, seat + 0.62 * h / 1.75)
    for side in (-1, 1):  # arms reaching to the handlebar
        c = side * (torso_w / 2 + 0.02)
        b.oriented_box(rider, ID["rider"], Material.TOP, anchor, heading, (0.05 + lean, base / 2 - 0.05),
                       (c - 0.045, c + 0.045), seat + 0.4 * h / 1.75, seat + 0.5 * h / 1.75)
    head_r = 0.11 * h / 1.75
    head_y = seat + 0.62 * h / 1.75 + head_r * 1.1
    material = Material.HELMET if (motorcycle or rng.random() < 0.5) else Material.HAIR
    b.oriented_ellipsoid(rider, ID["rider"], Material.SKIN, anchor, heading, 0.05 + lean, 0.0, head_y,
                         (head_r, head_r * 1.15, head_r * 0.95))
    b.oriented_ellipsoid(rider, ID["rider"], material, anchor, heading, lean, 0.0, head_y + head_r * 0.35,
                         (head_r * 1.15 * (1.1 if material == Material.HELMET else 1.0), head_r * 0.9,
                          head_r * 1.1))


def _wheels(b: _Builder, obj, label_id, anchor, heading, y0, length, width, radius, axles=2) -> None:
    positions = np.linspace(-length / 2 + radius * 2.2, length / 2 - radius * 2.2, axles)
    for a in positions:
        for side in (-1, 1):
            b.oriented_ellipsoid(obj, label_id, Material.WHEEL, anchor, heading, float(a),
                                 side * (width / 2 - 0.12), y0 + radius, (radius, radius, 0.13))


def add_car(b: _Builder, anchor, heading: int, y0: float, scale: float) -> None:
    rng = b.rng
    obj = b.new_object("car", ID["car"], heading, light=True)
    length = rng.uniform(3.8, 4.9) * scale
    width = rng.uniform(1.68, 1.92) * scale
    body_top = y0 + rng.uniform(0.95, 1.1) * scale
    roof = body_top + rng.uniform(0.42, 0.6) * scale
    if rng.random() < 0.15:  # van / SUV: taller cabin that reaches further back
        roof += 0.35 * scale
    clearance = 0.26 * scale
    b.oriented_box(obj, ID["car"], Material.CAR_BODY, anchor, heading, (-length / 2, length / 2),
                   (-width / 2, width / 2), y0 + clearance, body_top)
    cabin_front = length * rng.uniform(0.05, 0.2)
    cabin_back = -length / 2 + length * rng.uniform(0.08, 0.2)
    b.oriented_box(obj, ID["car"], Material.GLASS, anchor, heading, (cabin_back, cabin_front),
                   (-width / 2 + 0.08, width / 2 - 0.08), body_top - 0.01, roof)  # its top is the roof
    _wheels(b, obj, ID["car"], anchor, heading, y0, length, width, 0.32 * scale)


def add_truck(b: _Builder, anchor, heading: int, y0: float, scale: float) -> None:
    rng = b.rng
    obj = b.new_object("truck", ID["truck"], heading, light=True)
    cab_l = rng.uniform(1.9, 2.4) * scale
    cargo_l = rng.uniform(4.5, 9.0) * scale
    width = rng.uniform(2.35, 2.55) * scale
    cargo_h = rng.uniform(3.3, 3.9) * scale
    cab_h = rng.uniform(2.6, 3.1) * scale
    length = cab_l + cargo_l + 0.3
    front = length / 2
    b.oriented_box(obj, ID["truck"], Material.CAR_BODY, anchor, heading, (front - cab_l, front),
                   (-width / 2 + 0.05, width / 2 - 0.05), y0 + 0.5, y0 + cab_h * 0.62)
    b.oriented_box(obj, ID["truck"], Material.GLASS, anchor, heading, (front - cab_l + 0.2, front - 0.05),
                   (-width / 2 + 0.08, width / 2 - 0.08), y0 + cab_h * 0.62, y0 + cab_h)
    b.oriented_box(obj, ID["truck"], Material.CARGO, anchor, heading, (-length / 2, front - cab_l - 0.3),
                   (-width / 2, width / 2), y0 + 0.8, y0 + cargo_h)
    b.oriented_box(obj, ID["truck"], Material.WHEEL, anchor, heading, (-length / 2 + 0.3, front - 0.3),
                   (-width / 2 + 0.2, width / 2 - 0.2), y0 + 0.45, y0 + 0.85)  # chassis
    _wheels(b, obj, ID["truck"], anchor, heading, y0, length, width, 0.5 * scale, axles=3)


def add_bus(b: _Builder, anchor, heading: int, y0: float, scale: float) -> None:
    rng = b.rng
    obj = b.new_object("bus", ID["bus"], heading, light=True)
    length = (rng.uniform(11.0, 13.0) if rng.random() < 0.8 else rng.uniform(17.0, 18.5)) * scale
    width = 2.55 * scale
    height = rng.uniform(3.0, 3.25) * scale
    b.oriented_box(obj, ID["bus"], Material.BUS_BODY, anchor, heading, (-length / 2, length / 2),
                   (-width / 2, width / 2), y0 + 0.3, y0 + height * 0.45)
    b.oriented_box(obj, ID["bus"], Material.GLASS, anchor, heading, (-length / 2 + 0.05, length / 2 - 0.05),
                   (-width / 2 + 0.03, width / 2 - 0.03), y0 + height * 0.45, y0 + height * 0.88)
    b.oriented_box(obj, ID["bus"], Material.BUS_BODY, anchor, heading, (-length / 2, length / 2),
                   (-width / 2, width / 2), y0 + height * 0.88, y0 + height)
    _wheels(b, obj, ID["bus"], anchor, heading, y0, length, width, 0.5 * scale,
            axles=2 if length < 15 else 3)


def add_tram(b: _Builder, anchor, heading: int, y0: float, scale: float) -> None:
    rng = b.rng
    obj = b.new_object("train", ID["train"], heading, light=True)
    length = rng.uniform(24.0, 36.0) * scale
    width = rng.uniform(2.3, 2.65) * scale
    height = 3.4 * scale
    b.oriented_box(obj, ID["train"], Material.TRAM_BODY, anchor, heading, (-length / 2, length / 2),
                   (-width / 2, width / 2), y0 + 0.35, y0 + height * 0.42)
    b.oriented_box(obj, ID["train"], Material.GLASS, anchor, heading, (-length / 2 + 0.05, length / 2 - 0.05),
                   (-width / 2 + 0.02, width / 2 - 0.02), y0 + height * 0.42, y0 + height * 0.85)
    b.oriented_box(obj, ID["train"], Material.TRAM_BODY, anchor, heading, (-length / 2, length / 2),
                   (-width / 2, width / 2), y0 + height * 0.85, y0 + height)
    for a in (-length / 4, length / 4):  # pantographs: thin frames reaching to the wire
        b.oriented_box(obj, ID["train"], Material.BIKE_FRAME, anchor, heading, (a - 0.6, a + 0.6),
                       (-0.04, 0.04), y0 + height, y0 + height + 0.9)
        b.oriented_box(obj, ID["train"], Material.BIKE_FRAME, anchor, heading, (a - 0.05, a + 0.05),
                       (-0.7, 0.7), y0 + height + 0.85, y0 + height + 0.92)


def add_tree(b: _Builder, x: float, z: float, y0: float, size: float = 1.0) -> None:
    rng = b.rng
    obj = b.new_object("tree", ID["vegetation"])
    trunk_h = rng.uniform(1.8, 3.5) * size
    trunk_w = rng.uniform(0.2, 0.4) * size
    rx, ry = rng.uniform(1.4, 3.2) * size, rng.uniform(1.8, 3.8) * size
    b.box(obj, ID["vegetation"], Material.TRUNK, (x - trunk_w / 2, y0, z - trunk_w / 2),
          (x + trunk_w / 2, y0 + trunk_h + ry * 0.5, z + trunk_w / 2))
    centre_y = y0 + trunk_h + ry * 0.85
    b.ellipsoid(obj, ID["vegetation"], Material.FOLIAGE, (x, centre_y, z), (rx, ry, rx * rng.uniform(0.8, 1.2)))
    for _ in range(int(rng.integers(0, 3))):  # lumps make the crown less regular
        off = rng.normal(0, 0.45, 3) * (rx, ry, rx)
        r = rng.uniform(0.45, 0.7)
        b.ellipsoid(obj, ID["vegetation"], Material.FOLIAGE, (x + off[0], centre_y + off[1], z + off[2]),
                    (rx * r, ry * r, rx * r))


def add_pole(b: _Builder, x: float, z: float, y0: float, height: float, width: float = 0.16,
             obj: int | None = None) -> int:
    if obj is None:
        obj = b.new_object("pole", ID["pole"])
    b.box(obj, ID["pole"], Material.POLE, (x - width / 2, y0, z - width / 2), (x + width / 2, y0 + height, z + width / 2))
    return obj


def add_street_lamp(b: _Builder, x: float, z: float, y0: float, towards_road: int) -> None:
    rng = b.rng
    obj = b.new_object("lamp", ID["pole"], light=True)
    height = rng.uniform(6.0, 9.0)
    add_pole(b, x, z, y0, height, rng.uniform(0.14, 0.22), obj)
    arm = rng.uniform(1.0, 2.2)
    x_end = x + towards_road * arm
    b.box(obj, ID["pole"], Material.POLE, (min(x, x_end), y0 + height - 0.12, z - 0.05),
          (max(x, x_end), y0 + height, z + 0.05))
    b.box(obj, ID["pole"], Material.LAMP, (x_end - 0.3, y0 + height - 0.25, z - 0.18),
          (x_end + 0.3, y0 + height - 0.05, z + 0.18))


def add_traffic_light(b: _Builder, x: float, z: float, y0: float, towards_road: int, overhead: bool,
                      facing_side: bool = False) -> None:
    """A pole with one or two light housings (facing the camera, or sideways at intersections);
    ``overhead`` lights hang from an arm over the road."""
    rng = b.rng
    pole = b.new_object("traffic light pole", ID["pole"])
    height = rng.uniform(3.2, 4.2) if not overhead else rng.uniform(5.2, 6.2)
    add_pole(b, x, z, y0, height, rng.uniform(0.14, 0.2), pole)
    housings = [(x + towards_road * 0.28, y0 + height - 1.0)]
    if overhead:
        arm = rng.uniform(3.0, 6.0)
        x_end = x + towards_road * arm
        b.box(pole, ID["pole"], Material.POLE, (min(x, x_end), y0 + height - 0.15, z - 0.07),
              (max(x, x_end), y0 + height, z + 0.07))
        housings = [(x_end - towards_road * 0.3, y0 + height - 1.1)]
    elif rng.random() < 0.35:
        housings.append((x + towards_road * 0.28, y0 + height - 2.2))
    for hx, hy in housings:
        light = b.new_object("traffic light", ID["traffic light"], light=True)
        w, hh, d = 0.32, rng.choice([0.9, 0.95, 0.65]), 0.28
        if facing_side:
            w, d = d, w
        b.box(light, ID["traffic light"], Material.TRAFFIC_LIGHT, (hx - w / 2, hy, z - d / 2 - 0.15),
              (hx + w / 2, hy + hh, z + d / 2 - 0.15))


def add_sign(b: _Builder, x: float, z: float, y0: float, on_pole: int | None = None, height: float | None = None) -> None:
    rng = b.rng
    if on_pole is None:
        pole_h = rng.uniform(2.4, 3.3)
        add_pole(b, x, z, y0, pole_h, rng.uniform(0.06, 0.09))
        height = pole_h - 0.1
    sign = b.new_object("traffic sign", ID["traffic sign"])
    size = rng.uniform(0.5, 0.8)
    shape = rng.integers(0, 3)
    cy = y0 + height - size / 2
    if shape == 0:  # round
        b.ellipsoid(sign, ID["traffic sign"], Material.SIGN, (x, cy, z - 0.06), (size / 2, size / 2, 0.025))
    elif shape == 1:  # square / rectangular
        w = size * rng.uniform(0.8, 1.6)
        b.box(sign, ID["traffic sign"], Material.SIGN, (x - w / 2, cy - size / 2, z - 0.08), (x + w / 2, cy + size / 2, z - 0.04))
    else:  # stacked pair of small plates
        b.box(sign, ID["traffic sign"], Material.SIGN, (x - size / 2, cy - 0.05, z - 0.08), (x + size / 2, cy + size / 2, z - 0.04))
        b.box(sign, ID["traffic sign"], Material.SIGN, (x - size / 2, cy - size * 0.6, z - 0.08),
              (x + size / 2, cy - 0.1, z - 0.04))


def add_static(b: _Builder, x: float, z: float, y0: float) -> None:
    """Bins, benches, bollards, advertising columns: annotated 'static' (void) in Cityscapes."""
    rng = b.rng
    obj = b.new_object("static", ID["static"])
    kind = rng.integers(0, 4)
    if kind == 0:  # bin
        b.box(obj, ID["static"], Material.STATIC, (x - 0.3, y0, z - 0.3), (x + 0.3, y0 + 1.0, z + 0.3))
    elif kind == 1:  # bench
        b.box(obj, ID["static"], Material.STATIC, (x - 0.25, y0 + 0.4, z - 0.9), (x + 0.25, y0 + 0.5, z + 0.9))
        b.box(obj, ID["static"], Material.STATIC, (x + 0.2, y0 + 0.5, z - 0.9), (x + 0.28, y0 + 0.9, z + 0.9))
    elif kind == 2:  # bollards
        for dz in (-1.5, 0.0, 1.5):
            b.box(obj, ID["static"], Material.STATIC, (x - 0.07, y0, z + dz - 0.07), (x + 0.07, y0 + 0.9, z + dz + 0.07))
    else:  # advertising column / electrical box
        r = rng.uniform(0.4, 0.7)
        b.box(obj, ID["static"], Material.STATIC, (x - r, y0, z - r), (x + r, y0 + rng.uniform(1.2, 3.0), z + r))


def add_fence(b: _Builder, x0: float, x1: float, z0: float, z1: float, y0: float, railing: bool) -> None:
    """A fence between two ground points (along x or z): a mesh panel, or posts with two rails."""
    rng = b.rng
    obj = b.new_object("fence", ID["fence"])
    h = rng.uniform(1.0, 2.0)
    along_z = abs(z1 - z0) >= abs(x1 - x0)
    t = 0.05
    if along_z:
        xs, lo, hi = (x0 + x1) / 2, min(z0, z1), max(z0, z1)
    else:
        zs, lo, hi = (z0 + z1) / 2, min(x0, x1), max(x0, x1)

    def panel(a0, a1, ya, yb, thick):
        if along_z:
            b.box(obj, ID["fence"], Material.FENCE, (xs - thick, ya, a0), (xs + thick, yb, a1))
        else:
            b.box(obj, ID["fence"], Material.FENCE, (a0, ya, zs - thick), (a1, yb, zs + thick))

    if not railing:
        panel(lo, hi, y0, y0 + h, t)
        return
    h = min(h, 1.3)
    panel(lo, hi, y0 + h - 0.06, y0 + h, t)
    panel(lo, hi, y0 + h * 0.45, y0 + h * 0.45 + 0.05, t)
    n_posts = max(2, int((hi - lo) / rng.uniform(1.5, 2.5)) + 1)
    for a in np.linspace(lo, hi - 0.07, n_posts):
        panel(a, a + 0.07, y0, y0 + h, 0.04)


# ---------------------------------------------------------------------------------------------
@dataclass
class _Lot:
    z0: float
    z1: float
    kind: str  # building / park / street
    front: Material  # ground of the front zone
    setback: float


def _poisson_positions(rng, start: float, stop: float, rate_per_m: float) -> np.ndarray:
    n = rng.poisson(max(rate_per_m, 0.0) * max(stop - start, 0.0))
    return np.sort(rng.uniform(start, stop, n))


def sample_scene(rng: np.random.Generator, spec: DomainSpec, size: tuple[int, int]) -> Scene:
    """A random street scene of domain ``spec`` for an (H, W) image."""
    lay, cam_stats = spec.layout, spec.camera
    b = _Builder(rng)
    height, width = size

    # --- cross-section -------------------------------------------------------------------
    lanes = int(rng.choice(lay.lanes_per_direction))
    lane_w = rng.uniform(*lay.lane_width_m)
    lanes_half = lanes * lane_w
    parking_w = [2.2 if rng.random() < 0.6 else 0.0 for _ in range(2)]
    road_half = lanes_half + max(parking_w)  # symmetric road band; parking strips inside it
    parking_w = [max(parking_w)] * 2 if max(parking_w) > 0 else [0.0, 0.0]
    sidewalk_w = tuple(float(rng.uniform(*lay.sidewalk_width_m)) for _ in range(2))
    strip_w = tuple(float(rng.uniform(1.2, 2.5)) if (lay.terrain and rng.random() < lay.tree_strip_prob)
                    else 0.0 for _ in range(2))
    curb_h = rng.uniform(0.1, 0.16)
    yard_x = [road_half + strip_w[s] + sidewalk_w[s] for s in range(2)]  # where lots begin (|x|)

    # --- along the street: far end, side streets, lots -----------------------------------
    far_end = rng.uniform(70.0, 220.0) if rng.random() < lay.far_end_prob else None
    z_limit = far_end if far_end is not None else 320.0
    side_streets: list[tuple[int, float, float, float]] = []
    if rng.random() < lay.side_street_prob:
        z0 = rng.uniform(8.0, 70.0)
        w = rng.uniform(11.0, 18.0)
        rim = rng.uniform(2.0, 3.5)
        sides = [0, 1] if rng.random() < 0.6 else [int(rng.integers(0, 2))]
        for s in sides:
            side_streets.append((s, z0, z0 + w, rim))
    if far_end is not None:  # T junction: a cross street in front of the far facade
        w = rng.uniform(11.0, 16.0)
        for s in (0, 1):
            side_streets.append((s, far_end - w, far_end, 2.5))

    lots: list[list[_Lot]] = [[], []]
    for s in range(2):
        z = -25.0
        while z < z_limit:
            length = rng.uniform(8.0, 32.0)
            z_next = min(z + length, z_limit)
            crossing = [(a, c) for side, a, c, _ in side_streets if side == s and a < z_next and c > z]
            if crossing:
                a, c = crossing[0]
                if a > z + 3.0:
                    lots[s].append(_Lot(z, a, "building", Material.SIDEWALK, 0.0))
                lots[s].append(_Lot(max(a, z), c, "street", Material.SIDEWALK, 0.0))
                z = c
                continue
            if rng.random() < lay.park_lot_prob:
                front = Material.TERRAIN if lay.terrain else Material.SIDEWALK
                lots[s].append(_Lot(z, z_next, "park", front, 0.0))
            else:
                setback = rng.uniform(1.5, 8.0) if rng.random() < lay.setback_prob else 0.0
                if not lay.terrain:
                    front = Material.SIDEWALK
                elif rng.random() < lay.void_ground_prob:
                    front = Material.BARE_GROUND
                else:
                    front = Material.TERRAIN if rng.random() < 0.7 else Material.SIDEWALK
                lots[s].append(_Lot(z, z_next, "building", front, setback))
            z = z_next

    # --- camera ----------------------------------------------------------------------------
    if cam_stats.placement == "lane":
        lane = int(rng.integers(0, lanes))
        cam_x = (lane + 0.5) * lane_w + rng.normal(0, 0.25)
    else:
        cam_x = rng.uniform(-yard_x[0] + 0.5, yard_x[1] - 0.5)
    cam_ground = curb_h if abs(cam_x) > road_half else 0.0
    cam_h = rng.uniform(*cam_stats.height_m)
    focal = rng.uniform(*cam_stats.focal_over_width) * width
    camera = Camera.looking(
        height, width, focal,
        width / 2 + cam_stats.principal_offset[0] * width, height / 2 + cam_stats.principal_offset[1] * height,
        (cam_x, cam_ground + cam_h, 0.0),
        math.radians(rng.uniform(*cam_stats.pitch_deg)), math.radians(rng.uniform(*cam_stats.yaw_deg)),
        math.radians(rng.uniform(*cam_stats.roll_deg)),
    )

    # --- ground marks ----------------------------------------------------------------------
    lane_lines: list[tuple[float, float, bool]] = []
    centre_solid = lanes > 1 and rng.random() < 0.5
    lane_lines.append((0.0, 0.12 if not centre_solid else 0.2, not centre_solid))
    for k in range(1, lanes):
        for sign in (-1, 1):
            lane_lines.append((sign * k * lane_w, 0.12, True))
    if rng.random() < 0.8:
        for sign in (-1, 1):
            lane_lines.append((sign * (lanes_half - 0.2), 0.13, False))
    crosswalks = []
    for side, z0, z1, rim in side_streets:
        if side == 1 and rng.random() < 0.7 and z0 > 3:
            crosswalks.append((z0 - 4.0, z0 - 1.0))
    if not crosswalks and rng.random() < 0.15:
        zc = rng.uniform(10, 40)
        crosswalks.append((zc, zc + 3.0))
    parking_bays = []
    for s in range(2):
        if parking_w[s] > 0 and rng.random() < lay.parking_bay_prob:
            z0 = rng.uniform(0, 20)
            parking_bays.append((s, z0, z0 + rng.uniform(15, 60), parking_w[s]))
    tram = lay.trains and rng.random() < lay.train_prob
    tram_x = -lane_w / 2 if lanes >= 1 else 0.0
    rails = [tram_x - 0.72, tram_x + 0.72] if (tram or (lay.trains and rng.random() < 0.05)) else []

    lot_starts = tuple(np.array([lot.z0 for lot in lots[s]]) for s in range(2))
    lot_front = tuple(np.array([int(lot.front) for lot in lots[s]], dtype=np.uint8) for s in range(2))
    ground = GroundLayout(road_half, curb_h, strip_w, sidewalk_w, lot_starts, lot_front, side_streets,
                          lane_lines, crosswalks, parking_bays, rails)

    def in_side_street(s: int, z: float, margin: float = 0.0) -> bool:
        return any(side == s and a - margin < z < c + margin for side, a, c, _ in side_streets)

    sign_of = (-1.0, 1.0)

    # --- buildings and lot contents -----------------------------------------------------------
    for s in range(2):
        sg = sign_of[s]
        for lot in lots[s]:
            if lot.kind == "street":
                _side_street_buildings(b, lay, sg, yard_x[s], lot.z0, lot.z1, curb_h)
                continue
            if lot.kind == "park":
                _park(b, lay, sg, yard_x[s], lot, curb_h, road_half)
                continue
            facade = yard_x[s] + lot.setback
            z = lot.z0
            while z < lot.z1 - 1.0:  # one to three houses per lot
                zb1 = min(lot.z1, z + rng.uniform(6.0, 22.0))
                if lot.z1 - zb1 < 4.0:
                    zb1 = lot.z1
                bh = rng.uniform(*lay.building_height_m)
                depth = rng.uniform(12.0, 30.0)
                offset = rng.uniform(0.0, 0.6) if rng.random() < 0.4 else 0.0
                house = b.new_object("building", ID["building"])
                x_in, x_out = facade + offset, facade + offset + depth
                b.box(house, ID["building"], Material.FACADE,
                      (min(sg * x_in, sg * x_out), 0.0, z), (max(sg * x_in, sg * x_out), bh, zb1))
                z = zb1
            if lot.setback > 0:
                _front_yard(b, lay, sg, yard_x[s], facade, lot, curb_h)
            elif rng.random() < lay.wall_prob * 0.15:  # a wall in a gap between houses
                wall = b.new_object("wall", ID["wall"])
                zc = rng.uniform(lot.z0, lot.z1)
                b.box(wall, ID["wall"], Material.WALL, (min(sg * (facade - 0.3), sg * facade), curb_h, zc - 3),
                      (max(sg * (facade - 0.3), sg * facade), curb_h + rng.uniform(2.0, 3.5), zc + 3))

    if far_end is not None:  # the facade closing the street
        x = -90.0
        while x < 90.0:
            w = rng.uniform(8.0, 25.0)
            house = b.new_object("building", ID["building"])
            b.box(house, ID["building"], Material.FACADE, (x, 0.0, far_end + rng.uniform(0, 1.0)),
                  (x + w, rng.uniform(*lay.building_height_m), far_end + 25.0))
            x += w

    # --- tree strips, lamps, signs, static objects, parked bicycles on the sidewalks ----------
    z_view = min(z_limit, 140.0)
    for s in range(2):
        sg = sign_of[s]
        if strip_w[s] > 0:
            for z in np.arange(rng.uniform(0, 8), z_view, rng.uniform(7.0, 14.0)):
                if not in_side_street(s, z, 2.0):
                    add_tree(b, sg * (road_half + strip_w[s] / 2), z, curb_h, rng.uniform(0.8, 1.2))
        lamp_x = road_half + 0.45 if strip_w[s] == 0 else road_half + strip_w[s] / 2 + 0.8
        for z in np.arange(rng.uniform(0, 12), z_view, rng.uniform(*lay.lamps_spacing_m)):
            if not in_side_street(s, z, 1.0):
                add_street_lamp(b, sg * lamp_x, z, curb_h, -int(sg))
        inner = road_half + strip_w[s]
        for z in _poisson_positions(rng, 3.0, min(z_view, 90.0), lay.signs_per_100m / 200.0):
            if not in_side_street(s, z, 1.0):
                add_sign(b, sg * (inner + 0.35), z, curb_h)
        for z in _poisson_positions(rng, 2.0, min(z_view, 70.0), lay.static_per_100m / 200.0):
            if not in_side_street(s, z, 1.0):
                add_static(b, sg * (inner + rng.uniform(0.5, sidewalk_w[s] - 0.5)), z, curb_h)
        for z in _poisson_positions(rng, 2.0, min(z_view, 60.0), lay.parked_bicycles_per_100m / 200.0):
            if not in_side_street(s, z, 1.0):
                n = int(rng.integers(1, 4))
                for k in range(n):
                    add_two_wheeler(b, (sg * (inner + sidewalk_w[s] - 1.0), z + 0.7 * k), 2 if sg < 0 else 3,
                                    curb_h, 1.0, motorcycle=rng.random() < 0.15, ridden=False)

    # --- traffic lights at intersections and crossings ------------------------------------------
    for side, z0, z1, rim in side_streets:
        if rng.random() > lay.traffic_light_prob:
            continue
        sg = sign_of[side]
        x = sg * (road_half + 0.6)
        add_traffic_light(b, x, z0 - 0.8, curb_h, -int(sg), overhead=rng.random() < 0.35)
        if rng.random() < 0.6:
            add_traffic_light(b, x, z1 + 0.8, curb_h, -int(sg), overhead=False, facing_side=rng.random() < 0.5)
        if rng.random() < 0.4:
            add_sign(b, x + sg * 0.2, z0 - 0.8, curb_h, on_pole=1, height=2.6)
    for z0, z1 in crosswalks:
        if rng.random() < lay.traffic_light_prob * 0.6:
            for s in range(2):
                add_traffic_light(b, sign_of[s] * (road_half + 0.6), z0 - 0.5, curb_h, -int(sign_of[s]), overhead=False)

    # --- persons ----------------------------------------------------------------------------------
    for s in range(2):
        sg = sign_of[s]
        inner = road_half + strip_w[s]
        for z in _poisson_positions(rng, 1.5, 75.0, lay.persons_per_10m / 10.0):
            x = sg * (inner + rng.uniform(0.4, sidewalk_w[s] - 0.3))
            group = 1 if rng.random() < 0.75 else int(rng.integers(2, 4))
            heading = int(rng.choice([0, 1, 0, 1, 2, 3]))
            for k in range(group):
                add_person(b, (x + rng.normal(0, 0.3), z + 0.7 * k), heading, curb_h, lay.person_scale)
    for z0, z1 in crosswalks:
        if rng.random() < lay.crossing_persons_prob:
            for _ in range(int(rng.integers(1, 5))):
                add_person(b, (rng.uniform(-road_half, road_half), rng.uniform(z0, z1)),
                           int(rng.choice([2, 3])), 0.0, lay.person_scale)

    # --- vehicles -----------------------------------------------------------------------------------
    def vehicle(anchor, heading, y0=0.0):
        r = rng.random()
        if lay.trucks and r < lay.truck_share:
            add_truck(b, anchor, heading, y0, lay.vehicle_scale)
        elif r < lay.truck_share + lay.bus_share:
            add_bus(b, anchor, heading, y0, lay.vehicle_scale)
        else:
            add_car(b, anchor, heading, y0, lay.vehicle_scale)

    for k in range(lanes):
        for sg in (-1.0, 1.0):
            x = sg * (k + 0.5) * lane_w
            for z in _poisson_positions(rng, 7.0, min(z_view, 150.0), lay.moving_cars_per_lane_100m / 100.0 * 0.6):
                if tram and abs(x - tram_x) < 1.0:
                    continue
                vehicle((x + rng.normal(0, 0.25), z), 0 if sg > 0 else 1)
    for s in range(2):
        if parking_w[s] == 0:
            continue
        sg = sign_of[s]
        for z in np.arange(rng.uniform(-3, 3), min(z_view, 90.0), rng.uniform(5.3, 6.5)):
            if in_side_street(s, z, 3.0) or rng.random() > lay.parked_car_prob:
                continue
            add_car(b, (sg * (lanes_half + parking_w[s] / 2 + rng.normal(0, 0.1)), z + rng.normal(0, 0.3)),
                    int(rng.choice([0, 1])), 0.0, lay.vehicle_scale)
    for side, z0, z1, rim in side_streets:  # cross traffic
        if z1 - z0 < 10 or rng.random() < 0.4:
            continue
        sg = sign_of[side]
        heading = 2 if rng.random() < 0.5 else 3
        zc = (z0 + z1) / 2 + (-1.8 if heading == 2 else 1.8)
        vehicle((sg * rng.uniform(road_half + 3, road_half + 25), zc), heading)
    if tram:
        add_tram(b, (tram_x, rng.uniform(18.0, 70.0)), int(rng.choice([0, 1])), 0.0, lay.vehicle_scale)

    # --- riders -----------------------------------------------------------------------------------
    for _ in range(int(rng.integers(lay.riders_per_frame[0], lay.riders_per_frame[1] + 1))):
        motorcycle = rng.random() < lay.motorcycle_share
        r = rng.random()
        if r < 0.65:  # same direction, near the right edge of the lanes (seen from behind)
            anchor, heading = (lanes_half - rng.uniform(0.5, 1.2), rng.uniform(4.0, 45.0)), 0
        elif r < 0.85:  # oncoming
            anchor, heading = (-lanes_half + rng.uniform(0.5, 1.2), rng.uniform(6.0, 50.0)), 1
        elif side_streets:  # crossing at the intersection (seen from the side)
            side, z0, z1, _ = side_streets[0]
            anchor = (sign_of[side] * rng.uniform(0, road_half + 8), rng.uniform(z0 + 2, z1 - 2))
            heading = int(rng.choice([2, 3]))
        else:
            anchor, heading = (rng.uniform(-lanes_half, lanes_half), rng.uniform(6.0, 40.0)), int(rng.choice([0, 1]))
        add_two_wheeler(b, anchor, heading, 0.0, lay.person_scale, motorcycle, ridden=True)

    elevation = math.radians(rng.uniform(18.0, 62.0))
    azimuth = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                    math.cos(elevation) * math.cos(azimuth)])
    return b.build(camera, ground, sun, spec.name)


def _front_yard(b: _Builder, lay, sg: float, yard_x: float, facade: float, lot: _Lot, curb_h: float) -> None:
    """Between sidewalk and a set-back facade: a wall, fence or hedge on the boundary, bushes, trees."""
    rng = b.rng
    x_edge = sg * (yard_x + 0.15)
    r = rng.random()
    z0, z1 = lot.z0 + 0.3, lot.z1 - 0.3
    if r < lay.wall_prob:
        wall = b.new_object("wall", ID["wall"])
        h = rng.uniform(0.5, 1.6)
        b.box(wall, ID["wall"], Material.WALL, (x_edge - 0.15, curb_h, z0), (x_edge + 0.15, curb_h + h, z1))
        if rng.random() < 0.3:  # railing on top of a low wall
            add_fence(b, x_edge, x_edge, z0, z1, curb_h + h, railing=True)
    elif r < lay.wall_prob + lay.fence_prob:
        add_fence(b, x_edge, x_edge, z0, z1, curb_h, railing=rng.random() < 0.4)
    elif r < lay.wall_prob + lay.fence_prob + lay.hedge_prob:
        hedge = b.new_object("hedge", ID["vegetation"])
        b.box(hedge, ID["vegetation"], Material.HEDGE, (x_edge - 0.4, curb_h, z0),
              (x_edge + 0.4, curb_h + rng.uniform(0.7, 1.8), z1))
    for _ in range(int(rng.integers(0, 3))):
        x = sg * rng.uniform(yard_x + 1.0, max(facade - 1.0, yard_x + 1.1))
        z = rng.uniform(lot.z0, lot.z1)
        if rng.random() < 0.5 and facade - yard_x > 4:
            add_tree(b, x, z, curb_h, 0.8)
        else:
            bush = b.new_object("bush", ID["vegetation"])
            r_ = rng.uniform(0.5, 1.2)
            b.ellipsoid(bush, ID["vegetation"], Material.HEDGE, (x, curb_h + r_ * 0.5, z), (r_, r_ * 0.8, r_))


def _park(b: _Builder, lay, sg: float, yard_x: float, lot: _Lot, curb_h: float, road_half: float) -> None:
    """A lawn with trees, bounded by a fence/hedge/railing, buildings far behind."""
    rng = b.rng
    x_edge = sg * (yard_x + 0.15)
    r = rng.random()
    if r < lay.fence_prob:
        add_fence(b, x_edge, x_edge, lot.z0 + 0.2, lot.z1 - 0.2, curb_h, railing=rng.random() < 0.6)
    elif r < lay.fence_prob + lay.hedge_prob:
        hedge = b.new_object("hedge", ID["vegetation"])
        b.box(hedge, ID["vegetation"], Material.HEDGE, (x_edge - 0.4, curb_h, lot.z0 + 0.2),
              (x_edge + 0.4, curb_h + rng.uniform(0.8, 2.0), lot.z1 - 0.2))
    if lay.guard_rail_prob and rng.random() < lay.guard_rail_prob:
        rail = b.new_object("guard rail", ID["guard rail"])
        x = sg * (road_half + 0.3)
        b.box(rail, ID["guard rail"], Material.GUARD_RAIL, (x - 0.05, curb_h + 0.45, lot.z0), (x + 0.05, curb_h + 0.8, lot.z1))
        for z in np.arange(lot.z0, lot.z1, 2.0):
            b.box(rail, ID["guard rail"], Material.GUARD_RAIL, (x - 0.06, curb_h, z), (x + 0.06, curb_h + 0.75, z + 0.12))
    for _ in range(int(rng.integers(1, 6))):
        add_tree(b, sg * rng.uniform(yard_x + 2, yard_x + 25), rng.uniform(lot.z0, lot.z1), curb_h,
                 rng.uniform(0.8, 1.4))
    far = yard_x + rng.uniform(25.0, 70.0)
    house = b.new_object("building", ID["building"])
    b.box(house, ID["building"], Material.FACADE, (min(sg * far, sg * (far + 20)), 0.0, lot.z0),
          (max(sg * far, sg * (far + 20)), rng.uniform(*lay.building_height_m), lot.z1))


def _side_street_buildings(b: _Builder, lay, sg: float, yard_x: float, z0: float, z1: float, curb_h: float) -> None:
    """Facades lining a side street, seen when looking into it."""
    rng = b.rng
    x = yard_x + rng.uniform(0.0, 3.0)
    while x < yard_x + 120.0:
        w = rng.uniform(10.0, 25.0)
        for z_lo, z_hi in ((z0 - 25.0, z0), (z1, z1 + 25.0)):
            house = b.new_object("building", ID["building"])
            b.box(house, ID["building"], Material.FACADE, (min(sg * x, sg * (x + w)), 0.0, z_lo),
                  (max(sg * x, sg * (x + w)), rng.uniform(*lay.building_height_m), z_hi))
        x += w
