"""Sampling a street scene from a domain's statistics (:mod:`.domains`).

In order: the cross-section (lanes, parking strips, curbs, grass strips, sidewalks), the street
along z (lots of buildings, parks, side streets, an optional T junction closing the view), the
camera, the ground marks, then what stands on it: buildings and front yards, trees, lamps, signs,
traffic lights, bins and parked bicycles, persons on sidewalks and crossings, vehicles in lanes,
parking strips and cross traffic, riders. Road users get a ground footprint and are only placed
where they do not overlap one already there.

Placement rules are the same for every domain (only the statistics they read differ). Since
generator 1.1 they also make the thin and rare classes learnable at MiniCity's resolution: an
intersection gets one set of signals (before it on both curbs, on the far corner), signalled
crossings have lights on both curbs; walls also close courtyards between houses, carry fences,
retain park lawns and front plots seen head-on in side streets and at the far T junction;
riders ride within 35 m ahead; some parked two-wheelers stand by the curb, and free parking
slots now and then hold motorcycles.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from udaseg.data.minicity import objects as O
from udaseg.data.minicity.domains import DomainSpec, LayoutStats
from udaseg.data.minicity.scene import ID, Camera, GroundLayout, Material, Scene, SceneBuilder

SIDE_SIGN = (-1.0, 1.0)  # side 0 is left of the street (x < 0), side 1 right


@dataclass
class _Lot:
    z0: float
    z1: float
    kind: str  # building / park / street
    front: Material  # ground of the front zone
    setback: float


@dataclass
class _Street:
    """The street's cross-section and what runs along it (metres; per-side tuples: left, right)."""

    lanes: int
    lane_width: float
    lanes_half: float  # driving lanes: |x| < lanes_half
    parking_width: float  # parking strips inside the road band, along both curbs
    road_half: float
    curb_height: float
    sidewalk_width: tuple[float, float]
    strip_width: tuple[float, float]  # grass strip between curb and sidewalk
    far_end: float | None  # a facade closing the street (T junction)
    z_limit: float
    side_streets: list[tuple[int, float, float, float]]  # side, z0, z1, rim (corner sidewalk)
    lots: list[list[_Lot]] = field(default_factory=lambda: [[], []])
    tram: bool = False
    tram_x: float = 0.0

    def yard(self, side: int) -> float:
        """|x| where the lots begin (outer edge of the sidewalk)."""
        return self.road_half + self.strip_width[side] + self.sidewalk_width[side]

    def inner(self, side: int) -> float:
        """|x| of the sidewalk's inner edge."""
        return self.road_half + self.strip_width[side]

    def in_side_street(self, side: int, z: float, margin: float = 0.0) -> bool:
        return any(s == side and a - margin < z < c + margin for s, a, c, _ in self.side_streets)

    @property
    def view_depth(self) -> float:
        """How far along the street small objects are placed (beyond, they are sub-pixel)."""
        return min(self.z_limit, 140.0)


class _Footprints:
    """Ground rectangles taken by road users, so that cars, riders and pedestrians on crossings
    never interpenetrate."""

    def __init__(self):
        self.boxes: list[tuple[float, float, float, float]] = []

    def take(self, x: float, z: float, heading: int, length: float, width: float, margin: float = 0.3) -> bool:
        half_x, half_z = (width / 2, length / 2) if heading in (0, 1) else (length / 2, width / 2)
        box = (x - half_x - margin, x + half_x + margin, z - half_z - margin, z + half_z + margin)
        for x0, x1, z0, z1 in self.boxes:
            if box[0] < x1 and x0 < box[1] and box[2] < z1 and z0 < box[3]:
                return False
        self.boxes.append(box)
        return True


def _poisson_positions(rng, start: float, stop: float, rate_per_m: float) -> np.ndarray:
    n = rng.poisson(max(rate_per_m, 0.0) * max(stop - start, 0.0))
    return np.sort(rng.uniform(start, stop, n))


# ---------------------------------------------------------------------------------------------
def sample_scene(rng: np.random.Generator, spec: DomainSpec, size: tuple[int, int]) -> Scene:
    """A random street scene of domain ``spec`` for an (H, W) image."""
    lay = spec.layout
    b = SceneBuilder(rng)
    street = _sample_street(rng, lay)
    camera = _sample_camera(rng, spec, street, size)
    ground = _ground_layout(rng, lay, street)
    footprints = _Footprints()
    footprints.take(camera.position[0], 0.0, 0, 10.0, 2.0)  # the camera's own vehicle
    _add_buildings(b, lay, street)
    _add_street_furniture(b, lay, street)
    _add_traffic_lights(b, lay, street, ground)
    _add_pedestrians(b, lay, street, ground, footprints)
    _add_vehicles(b, lay, street, footprints)
    _add_riders(b, lay, street, footprints)
    elevation = math.radians(rng.uniform(18.0, 62.0))
    azimuth = rng.uniform(0, 2 * math.pi)
    sun = np.array([math.cos(elevation) * math.sin(azimuth), math.sin(elevation),
                    math.cos(elevation) * math.cos(azimuth)])
    return b.build(camera, ground, sun, spec.name)


def _sample_street(rng, lay: LayoutStats) -> _Street:
    lanes = int(rng.choice(lay.lanes_per_direction))
    lane_width = rng.uniform(*lay.lane_width_m)
    lanes_half = lanes * lane_width
    parking_width = 2.2 if rng.random() < lay.parking_strip_prob else 0.0
    sidewalk = (float(rng.uniform(*lay.sidewalk_width_m)), float(rng.uniform(*lay.sidewalk_width_m)))

    def strip_width() -> float:  # a grass strip with trees on this side, or none
        return float(rng.uniform(1.2, 2.5)) if (lay.terrain and rng.random() < lay.tree_strip_prob) else 0.0

    strip = (strip_width(), strip_width())
    far_end = rng.uniform(70.0, 220.0) if rng.random() < lay.far_end_prob else None
    side_streets: list[tuple[int, float, float, float]] = []
    if rng.random() < lay.side_street_prob:
        z0 = rng.uniform(8.0, 70.0)
        width = rng.uniform(11.0, 18.0)
        rim = rng.uniform(2.0, 3.5)
        for side in ([0, 1] if rng.random() < 0.6 else [int(rng.integers(0, 2))]):
            side_streets.append((side, z0, z0 + width, rim))
    if far_end is not None:  # T junction: a cross street in front of the far facade
        width = rng.uniform(11.0, 16.0)
        side_streets += [(side, far_end - width, far_end, 2.5) for side in (0, 1)]
    street = _Street(lanes, lane_width, lanes_half, parking_width, lanes_half + parking_width,
                     rng.uniform(0.1, 0.16), sidewalk, strip, far_end,
                     far_end if far_end is not None else 320.0, side_streets)
    for side in (0, 1):
        street.lots[side] = _sample_lots(rng, lay, street, side)
    street.tram = lay.trains and rng.random() < lay.train_prob
    street.tram_x = -lane_width / 2  # trams run in the middle of the oncoming lane
    return street


def _sample_lots(rng, lay: LayoutStats, street: _Street, side: int) -> list[_Lot]:
    lots = []
    z = -25.0
    while z < street.z_limit:
        z_next = min(z + rng.uniform(8.0, 32.0), street.z_limit)
        crossing = [(a, c) for s, a, c, _ in street.side_streets if s == side and a < z_next and c > z]
        if crossing:
            a, c = crossing[0]
            if a > z + 3.0:
                lots.append(_Lot(z, a, "building", Material.SIDEWALK, 0.0))
            lots.append(_Lot(max(a, z), c, "street", Material.SIDEWALK, 0.0))
            z = c
            continue
        if rng.random() < lay.park_lot_prob:
            lots.append(_Lot(z, z_next, "park", Material.TERRAIN if lay.terrain else Material.SIDEWALK, 0.0))
        else:
            setback = rng.uniform(1.5, 8.0) if rng.random() < lay.setback_prob else 0.0
            if not lay.terrain:
                front = Material.SIDEWALK
            elif rng.random() < lay.void_ground_prob:
                front = Material.BARE_GROUND
            else:
                front = Material.TERRAIN if rng.random() < 0.7 else Material.SIDEWALK
            lots.append(_Lot(z, z_next, "building", front, setback))
        z = z_next
    return lots


def _sample_camera(rng, spec: DomainSpec, street: _Street, size: tuple[int, int]) -> Camera:
    stats = spec.camera
    height, width = size
    if stats.placement == "lane":  # in a lane of the right-hand carriageway
        x = (int(rng.integers(0, street.lanes)) + 0.5) * street.lane_width + rng.normal(0, 0.25)
    else:  # anywhere across road and sidewalks, not right against the facades
        x = rng.uniform(-street.yard(0) + 1.5, street.yard(1) - 1.5)
    ground = street.curb_height if abs(x) > street.road_half else 0.0
    return Camera.looking(
        height, width, rng.uniform(*stats.focal_over_width) * width,
        width / 2 + stats.principal_offset[0] * width, height / 2 + stats.principal_offset[1] * height,
        (x, ground + rng.uniform(*stats.height_m), 0.0),
        math.radians(rng.uniform(*stats.pitch_deg)), math.radians(rng.uniform(*stats.yaw_deg)),
        math.radians(rng.uniform(*stats.roll_deg)),
    )


def _ground_layout(rng, lay: LayoutStats, street: _Street) -> GroundLayout:
    lanes, lane_width = street.lanes, street.lane_width
    centre_solid = lanes > 1 and rng.random() < 0.5
    lane_lines = [(0.0, 0.2 if centre_solid else 0.12, not centre_solid)]
    lane_lines += [(sign * k * lane_width, 0.12, True) for k in range(1, lanes) for sign in (-1, 1)]
    if rng.random() < 0.8:  # solid edge lines
        lane_lines += [(sign * (street.lanes_half - 0.2), 0.13, False) for sign in (-1, 1)]
    crosswalks = [(z0 - 4.0, z0 - 1.0) for side, z0, _, _ in street.side_streets
                  if side == 1 and z0 > 3 and rng.random() < 0.7]
    if not crosswalks and rng.random() < 0.3:
        zc = rng.uniform(10, 40)
        crosswalks.append((zc, zc + 3.0))
    parking_bays = []
    for side in (0, 1):
        if street.parking_width > 0 and rng.random() < lay.parking_bay_prob:
            z0 = rng.uniform(0, 20)
            parking_bays.append((side, z0, z0 + rng.uniform(15, 60), street.parking_width))
    rails = []
    if street.tram or (lay.trains and rng.random() < 0.05):  # tram tracks, sometimes without a tram
        rails = [street.tram_x - 0.72, street.tram_x + 0.72]
    def per_side(values: Callable[[int], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return values(0), values(1)

    lot_starts = per_side(lambda s: np.array([lot.z0 for lot in street.lots[s]]))
    lot_front = per_side(lambda s: np.array([int(lot.front) for lot in street.lots[s]], dtype=np.uint8))
    return GroundLayout(street.road_half, street.curb_height, street.strip_width, street.sidewalk_width, lot_starts,
                        lot_front, street.side_streets, lane_lines, crosswalks, parking_bays, rails)


# ---------------------------------------------------------------------------------------------
def _add_buildings(b: SceneBuilder, lay: LayoutStats, street: _Street) -> None:
    rng = b.rng
    curb = street.curb_height
    for side in (0, 1):
        sg = SIDE_SIGN[side]
        for lot in street.lots[side]:
            if lot.kind == "street":
                _side_street_buildings(b, lay, sg, street.yard(side), lot.z0, lot.z1)
                continue
            if lot.kind == "park":
                _park(b, lay, sg, street.yard(side), lot, curb, street.road_half)
                continue
            facade = street.yard(side) + lot.setback
            z = lot.z0
            while z < lot.z1 - 1.0:  # one to three houses per lot
                z_end = min(lot.z1, z + rng.uniform(6.0, 22.0))
                if lot.z1 - z_end < 4.0:
                    z_end = lot.z1
                height = rng.uniform(*lay.building_height_m)
                offset = rng.uniform(0.0, 0.6) if rng.random() < 0.4 else 0.0
                _house(b, sg, facade + offset, facade + offset + rng.uniform(12.0, 30.0), z, z_end, height)
                z = z_end
                if lot.setback == 0 and lot.z1 - z > 7.0 and rng.random() < lay.wall_prob:
                    gap = rng.uniform(3.0, 7.0)  # a courtyard between two houses, closed by a wall
                    _courtyard(b, lay, sg, facade, z, z + gap, curb)
                    z += gap
            if lot.setback > 0:
                _front_yard(b, lay, sg, street.yard(side), facade, lot, curb)
    if street.far_end is not None:  # the facades closing the street; some plots walled, built further back
        x = -90.0
        while x < 90.0:
            w = rng.uniform(8.0, 25.0)
            z = street.far_end + rng.uniform(0, 1.0)
            if rng.random() < lay.wall_prob * 0.5:
                _wall(b, x, x + w, z, z + 0.4, 0.0, rng.uniform(2.0, 3.5))
                z += rng.uniform(8.0, 20.0)
            house = b.new_object("building", ID["building"])
            b.box(house, ID["building"], Material.FACADE, (x, 0.0, z), (x + w, rng.uniform(*lay.building_height_m),
                                                                       street.far_end + 45.0))
            x += w


def _house(b: SceneBuilder, sg: float, x_in: float, x_out: float, z0: float, z1: float, height: float) -> None:
    """A building block between |x| = x_in (its facade) and x_out on side ``sg``."""
    house = b.new_object("building", ID["building"])
    b.box(house, ID["building"], Material.FACADE, (min(sg * x_in, sg * x_out), 0.0, z0),
          (max(sg * x_in, sg * x_out), height, z1))


def _wall(b: SceneBuilder, x0: float, x1: float, z0: float, z1: float, y0: float, y1: float) -> None:
    """A wall: a box between two ground corners (any order)."""
    wall = b.new_object("wall", ID["wall"])
    b.box(wall, ID["wall"], Material.WALL, (min(x0, x1), y0, min(z0, z1)), (max(x0, x1), y1, max(z0, z1)))


def _courtyard(b: SceneBuilder, lay, sg: float, facade: float, z0: float, z1: float, curb_h: float) -> None:
    """A gap between two houses: a wall (with a gate, often) in the facade line, a rear building."""
    _wall(b, sg * facade, sg * (facade + 0.3), z0, z1, curb_h, curb_h + b.rng.uniform(2.0, 3.2))
    back = facade + b.rng.uniform(6.0, 12.0)
    _house(b, sg, back, back + b.rng.uniform(10.0, 20.0), z0 - 1.0, z1 + 1.0, b.rng.uniform(*lay.building_height_m))


def _front_yard(b: SceneBuilder, lay, sg: float, yard_x: float, facade: float, lot: _Lot, curb_h: float) -> None:
    """Between sidewalk and a set-back facade: a wall, fence (some on a low wall) or hedge on the
    boundary, bushes, trees."""
    rng = b.rng
    x_edge = sg * (yard_x + 0.15)
    r = rng.random()
    z0, z1 = lot.z0 + 0.3, lot.z1 - 0.3
    if r < lay.wall_prob:
        h = rng.uniform(0.6, 2.0)
        _wall(b, x_edge - 0.15, x_edge + 0.15, z0, z1, curb_h, curb_h + h)
        if h < 1.3 and rng.random() < 0.3:  # railing on top of a low wall
            O.add_fence(b, x_edge, x_edge, z0, z1, curb_h + h, railing=True)
    elif r < lay.wall_prob + lay.fence_prob:
        base = rng.uniform(0.4, 0.8) if rng.random() < 0.4 else 0.0  # a fence on a low wall
        if base:
            _wall(b, x_edge - 0.12, x_edge + 0.12, z0, z1, curb_h, curb_h + base)
        O.add_fence(b, x_edge, x_edge, z0, z1, curb_h + base, railing=rng.random() < 0.4)
    elif r < lay.wall_prob + lay.fence_prob + lay.hedge_prob:
        hedge = b.new_object("hedge", ID["vegetation"])
        b.box(hedge, ID["vegetation"], Material.HEDGE, (x_edge - 0.4, curb_h, z0),
              (x_edge + 0.4, curb_h + rng.uniform(0.7, 1.8), z1))
    for _ in range(int(rng.integers(0, 3))):
        x = sg * rng.uniform(yard_x + 1.0, max(facade - 1.0, yard_x + 1.1))
        z = rng.uniform(lot.z0, lot.z1)
        if rng.random() < 0.5 and facade - yard_x > 4:
            O.add_tree(b, x, z, curb_h, 0.8)
        else:
            bush = b.new_object("bush", ID["vegetation"])
            r_ = rng.uniform(0.5, 1.2)
            b.ellipsoid(bush, ID["vegetation"], Material.HEDGE, (x, curb_h + r_ * 0.5, z), (r_, r_ * 0.8, r_))


def _park(b: SceneBuilder, lay, sg: float, yard_x: float, lot: _Lot, curb_h: float, road_half: float) -> None:
    """A lawn with trees, bounded by a fence/hedge/railing, buildings far behind."""
    rng = b.rng
    x_edge = sg * (yard_x + 0.15)
    r = rng.random()
    base = 0.0
    if rng.random() < lay.wall_prob:  # a retaining wall along the sidewalk; fence or hedge on it
        base = rng.uniform(0.5, 1.6)
        _wall(b, x_edge - 0.15, x_edge + 0.15, lot.z0 + 0.2, lot.z1 - 0.2, curb_h, curb_h + base)
    if r < lay.fence_prob:
        O.add_fence(b, x_edge, x_edge, lot.z0 + 0.2, lot.z1 - 0.2, curb_h + base, railing=rng.random() < 0.6)
    elif r < lay.fence_prob + lay.hedge_prob:
        hedge = b.new_object("hedge", ID["vegetation"])
        behind = sg * 0.3 if base else 0.0  # a hedge behind a retaining wall
        b.box(hedge, ID["vegetation"], Material.HEDGE, (x_edge - 0.4 + behind, curb_h, lot.z0 + 0.2),
              (x_edge + 0.4 + behind, curb_h + base + rng.uniform(0.8, 2.0), lot.z1 - 0.2))
    if lay.guard_rail_prob and rng.random() < lay.guard_rail_prob:
        rail = b.new_object("guard rail", ID["guard rail"])
        x = sg * (road_half + 0.3)
        b.box(rail, ID["guard rail"], Material.GUARD_RAIL, (x - 0.05, curb_h + 0.45, lot.z0),
              (x + 0.05, curb_h + 0.8, lot.z1))
        for z in np.arange(lot.z0, lot.z1, 2.0):  # posts
            b.box(rail, ID["guard rail"], Material.GUARD_RAIL, (x - 0.06, curb_h, z),
                  (x + 0.06, curb_h + 0.75, z + 0.12))
    for _ in range(int(rng.integers(1, 6))):
        O.add_tree(b, sg * rng.uniform(yard_x + 2, yard_x + 25), rng.uniform(lot.z0, lot.z1), curb_h,
                   rng.uniform(0.8, 1.4))
    far = yard_x + rng.uniform(25.0, 70.0)
    _house(b, sg, far, far + 20, lot.z0, lot.z1, rng.uniform(*lay.building_height_m))


def _side_street_buildings(b: SceneBuilder, lay, sg: float, yard_x: float, z0: float, z1: float) -> None:
    """Facades lining a side street, seen when looking into it. A plot on the far side (whose
    front faces the camera) may be walled, with its house further back and a tree behind the wall."""
    rng = b.rng
    x = yard_x + rng.uniform(0.0, 3.0)
    while x < yard_x + 120.0:
        w = rng.uniform(10.0, 25.0)
        _house(b, sg, x, x + w, z0 - 25.0, z0, rng.uniform(*lay.building_height_m))
        front = z1
        if rng.random() < lay.wall_prob * 0.5:
            _wall(b, sg * x, sg * (x + w), z1, z1 + 0.4, 0.0, rng.uniform(1.8, 3.0))
            front = z1 + rng.uniform(6.0, 14.0)
            if rng.random() < 0.6:
                O.add_tree(b, sg * (x + w * rng.uniform(0.2, 0.8)), z1 + 3.0, 0.0, rng.uniform(0.8, 1.2))
        _house(b, sg, x, x + w, front, z1 + 25.0, rng.uniform(*lay.building_height_m))
        x += w


# ---------------------------------------------------------------------------------------------
def _add_street_furniture(b: SceneBuilder, lay: LayoutStats, street: _Street) -> None:
    """Trees in grass strips or sidewalk pits, street lamps, signs, bins/benches, parked bicycles."""
    rng = b.rng
    curb, depth = street.curb_height, street.view_depth
    for side in (0, 1):
        sg = SIDE_SIGN[side]
        strip, inner = street.strip_width[side], street.inner(side)
        if strip > 0:
            for z in np.arange(rng.uniform(0, 8), depth, rng.uniform(7.0, 14.0)):
                if not street.in_side_street(side, z, 2.0):
                    O.add_tree(b, sg * (street.road_half + strip / 2), z, curb, rng.uniform(0.8, 1.2))
        elif rng.random() < lay.sidewalk_tree_prob:
            for z in np.arange(rng.uniform(0, 8), depth, rng.uniform(8.0, 16.0)):
                if not street.in_side_street(side, z, 2.0):
                    O.add_tree(b, sg * (street.road_half + 0.9), z, curb, rng.uniform(0.7, 1.0))
        lamp_x = street.road_half + (0.45 if strip == 0 else strip / 2 + 0.8)
        for z in np.arange(rng.uniform(0, 12), depth, rng.uniform(*lay.lamps_spacing_m)):
            if not street.in_side_street(side, z, 1.0):
                O.add_street_lamp(b, sg * lamp_x, z, curb, -int(sg))
        for z in _poisson_positions(rng, 3.0, min(depth, 90.0), lay.signs_per_100m / 200.0):
            if not street.in_side_street(side, z, 1.0):
                O.add_sign(b, sg * (inner + 0.35), z, curb)
        for z in _poisson_positions(rng, 2.0, min(depth, 70.0), lay.static_per_100m / 200.0):
            if not street.in_side_street(side, z, 1.0):
                O.add_static(b, sg * (inner + rng.uniform(0.5, street.sidewalk_width[side] - 0.5)), z, curb)
        for z in _poisson_positions(rng, 2.0, min(depth, 50.0), lay.parked_bicycles_per_100m / 200.0):
            if not street.in_side_street(side, z, 1.0):
                # a few side by side, across the sidewalk: along the house fronts, or at a stand by the curb
                x = inner + (street.sidewalk_width[side] - 1.0 if rng.random() < 0.5 else 1.0)
                for k in range(int(rng.integers(1, 4))):
                    O.add_two_wheeler(b, (sg * x, z + 0.7 * k), 2 if sg < 0 else 3, curb, 1.0,
                                      motorcycle=rng.random() < 0.05, ridden=False)


def _add_traffic_lights(b: SceneBuilder, lay: LayoutStats, street: _Street, ground: GroundLayout) -> None:
    """Signals at intersections and crossings. An intersection with signals (side streets on one
    or both sides, or the T junction at the far end) has one on the right-hand curb before it
    (some on an arm over the road), often a second one on the left-hand curb, and on the far
    corner of a side street one facing the cross traffic or the oncoming traffic (the camera sees
    its side or back); a signalled crossing has one on each curb."""
    rng = b.rng
    curb = street.curb_height
    placed: list[tuple[float, float]] = []
    x_right = street.road_half + 0.6

    def light(x: float, z: float, towards_road: int, overhead: bool = False, facing: str = "camera") -> None:
        if any(abs(x - px) < 1.0 and abs(z - pz) < 4.0 for px, pz in placed):
            return  # a pole stands there already (a crossing at an intersection)
        placed.append((x, z))
        O.add_traffic_light(b, x, z, curb, towards_road, overhead=overhead, facing=facing)

    intersections: dict[tuple[float, float], list[int]] = {}
    for side, z0, z1, _ in street.side_streets:
        intersections.setdefault((z0, z1), []).append(side)
    for (z0, z1), sides in intersections.items():
        if rng.random() > lay.traffic_light_prob:
            continue
        light(x_right, z0 - 0.8, -1, overhead=rng.random() < 0.35)
        if rng.random() < 0.6:
            light(-x_right, z0 - 0.8, 1)
        if rng.random() < 0.4:
            O.add_sign(b, x_right + 0.2, z0 - 0.8, curb, mounted_at=2.6)  # on the light's pole
        if street.far_end is not None and z1 >= street.far_end:
            continue  # the T junction: its far side is the facade
        for side in sides:
            if rng.random() < 0.6:
                sg = SIDE_SIGN[side]
                facing = ("camera", "away", "right" if sg > 0 else "left")[int(rng.integers(0, 3))]
                light(sg * x_right, z1 + 0.8, -int(sg), facing=facing)
    for z0, _ in ground.crosswalks:
        if rng.random() < lay.traffic_light_prob:
            for sg in SIDE_SIGN:
                light(sg * x_right, z0 - 0.5, -int(sg))


def _add_pedestrians(b: SceneBuilder, lay: LayoutStats, street: _Street, ground: GroundLayout,
                     footprints: _Footprints) -> None:
    """Persons on the sidewalks (alone or in small groups), and crossing at zebra crossings."""
    rng = b.rng
    for side in (0, 1):
        sg = SIDE_SIGN[side]
        for z in _poisson_positions(rng, 1.5, 75.0, lay.persons_per_10m / 10.0):
            x = sg * (street.inner(side) + rng.uniform(0.4, street.sidewalk_width[side] - 0.3))
            heading = int(rng.choice([0, 1, 0, 1, 2, 3]))
            for k in range(1 if rng.random() < 0.75 else int(rng.integers(2, 4))):
                O.add_person(b, (x + rng.normal(0, 0.3), z + 0.7 * k), heading, street.curb_height, lay.person_scale)
    for z0, z1 in ground.crosswalks:
        if rng.random() < lay.crossing_persons_prob:
            for _ in range(int(rng.integers(1, 5))):
                x, z = rng.uniform(-street.road_half, street.road_half), rng.uniform(z0, z1)
                heading = int(rng.choice([2, 3]))
                if footprints.take(x, z, heading, 0.5, 0.6, margin=0.1):
                    O.add_person(b, (x, z), heading, 0.0, lay.person_scale)


# Nominal ground footprints (length, width) of road users, generous enough for every variant.
_FOOTPRINT = {"car": (5.0, 2.0), "truck": (11.5, 2.6), "bus": (19.0, 2.6), "tram": (37.0, 2.7),
              "two-wheeler": (2.1, 0.8)}
_ADD_VEHICLE = {"car": O.add_car, "truck": O.add_truck, "bus": O.add_bus, "tram": O.add_tram}


def _add_vehicles(b: SceneBuilder, lay: LayoutStats, street: _Street, footprints: _Footprints) -> None:
    """A tram, moving traffic in every lane (both directions), parked cars (and now and then
    motorcycles in a free parking slot), cross traffic."""
    rng = b.rng
    scale = lay.vehicle_scale

    def place(kind: str, x: float, z: float, heading: int) -> None:
        length, width = _FOOTPRINT[kind]
        if footprints.take(x, z, heading, length * scale, width * scale):
            _ADD_VEHICLE[kind](b, (x, z), heading, 0.0, scale)

    def traffic_kind() -> str:
        r = rng.random()
        if lay.trucks and r < lay.truck_share:
            return "truck"
        return "bus" if r < lay.truck_share + lay.bus_share else "car"

    if street.tram:
        place("tram", street.tram_x, rng.uniform(18.0, 70.0), int(rng.choice([0, 1])))
    for k in range(street.lanes):
        for sg in (-1.0, 1.0):
            x = sg * (k + 0.5) * street.lane_width
            rate = lay.moving_cars_per_lane_100m / 100.0 * 0.6
            for z in _poisson_positions(rng, 7.0, min(street.view_depth, 150.0), rate):
                place(traffic_kind(), x + rng.normal(0, 0.25), z, 0 if sg > 0 else 1)
    if street.parking_width > 0:
        for side in (0, 1):
            sg = SIDE_SIGN[side]
            x_slot = street.lanes_half + street.parking_width / 2
            for z in np.arange(rng.uniform(-3, 3), min(street.view_depth, 90.0), rng.uniform(5.3, 6.5)):
                if street.in_side_street(side, z, 3.0):
                    continue
                if rng.random() > lay.parked_car_prob:
                    if rng.random() < 0.04:  # a free slot taken by motorcycles parked across it
                        heading = 2 if rng.random() < 0.5 else 3
                        for k in range(int(rng.integers(1, 3))):
                            if footprints.take(sg * x_slot, z + 1.0 * k, heading, 2.1, 0.8, margin=0.1):
                                O.add_two_wheeler(b, (sg * x_slot, z + 1.0 * k), heading, 0.0, 1.0,
                                                  motorcycle=True, ridden=False)
                    continue
                x = sg * (x_slot + rng.normal(0, 0.1))
                place("car", x, z + rng.normal(0, 0.3), int(rng.choice([0, 1])))
    for side, z0, z1, _ in street.side_streets:  # cross traffic
        if z1 - z0 < 10 or rng.random() < 0.4:
            continue
        heading = 2 if rng.random() < 0.5 else 3
        z = (z0 + z1) / 2 + (-1.8 if heading == 2 else 1.8)  # right-hand traffic
        place(traffic_kind(), SIDE_SIGN[side] * rng.uniform(street.road_half + 3, street.road_half + 25), z, heading)


def _add_riders(b: SceneBuilder, lay: LayoutStats, street: _Street, footprints: _Footprints) -> None:
    """Cyclists and motorcyclists: mostly near the right edge of the lanes within 35 m ahead, some
    oncoming, some crossing at the intersection (seen from the side)."""
    rng = b.rng
    length, width = _FOOTPRINT["two-wheeler"]
    lo, hi = lay.riders_per_frame
    for _ in range(int(rng.uniform(lo, hi + 1))):
        motorcycle = rng.random() < lay.motorcycle_share
        r = rng.random()
        if r < 0.65:
            x, z, heading = street.lanes_half - rng.uniform(0.5, 1.2), rng.uniform(4.0, 35.0), 0
        elif r < 0.85:
            x, z, heading = -street.lanes_half + rng.uniform(0.5, 1.2), rng.uniform(6.0, 40.0), 1
        elif street.side_streets:
            side, z0, z1, _ = street.side_streets[0]
            x = SIDE_SIGN[side] * rng.uniform(0, street.road_half + 8)
            z, heading = rng.uniform(z0 + 2, z1 - 2), int(rng.choice([2, 3]))
        else:
            x, z = rng.uniform(-street.lanes_half, street.lanes_half), rng.uniform(6.0, 35.0)
            heading = int(rng.choice([0, 1]))
        if footprints.take(x, z, heading, length * lay.person_scale, width):
            O.add_two_wheeler(b, (x, z), heading, 0.0, lay.person_scale, motorcycle, ridden=True)
