"""Object models: how a person, a rider on a bicycle, a car, a bus, a tree, a street lamp … is
built from boxes and ellipsoids.

Each ``add_*`` function takes a :class:`~.scene.SceneBuilder`, a ground anchor (x, z), a heading
(0: +z, seen from behind; 1: −z, seen from the front; 2: +x; 3: −x) and the ground height y0, and
adds one object (with its instance id, for thing classes) made of several primitives. Proportions
are metric and randomised per object; ``scale`` is the domain's size factor for vehicles or people.
Parts carry the material that drives their look: a car is a body, a glass cabin whose top is the
roof, and four tyres; a bus a body with a glass band; a rider's vehicle is labelled bicycle or
motorcycle and the rider "rider".

Thin things are modelled at their real size *with* the parts that make them visible at MiniCity's
resolution (generator 1.1): a traffic light is a three-lamp housing of 200/300 mm lenses, most
with a backplate, both labelled traffic light as in Cityscapes; a bicycle has a saddle, pedals,
a rack and mudguard (some with panniers), a motorcycle a tail and exhaust; riders hold the grips,
so that a two-wheeler seen from behind is one piece rather than a scatter of 1-pixel slivers.
"""

from __future__ import annotations

import numpy as np

from udaseg.data.minicity.scene import ID, Material, SceneBuilder


def add_person(b: SceneBuilder, anchor, heading: int, y0: float, scale: float, label_id: int | None = None,
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


def add_two_wheeler(b: SceneBuilder, anchor, heading: int, y0: float, scale: float, motorcycle: bool,
                    ridden: bool) -> None:
    """A bicycle or motorcycle, optionally with its rider. Wheels are thin ellipsoids; a bicycle has
    a frame, handlebar, saddle, pedals and cranks, often a rear rack and mudguard (some with
    panniers or a front basket); a motorcycle a body, handlebar, exhaust, tail with number plate
    and sometimes a top case. Seen from behind, a bicycle is thus more than its 5 cm tyre."""
    rng = b.rng
    label_id = ID["motorcycle"] if motorcycle else ID["bicycle"]
    vehicle = b.new_object("motorcycle" if motorcycle else "bicycle", label_id, heading,
                           light=motorcycle)
    wheel_r = (0.31 if motorcycle else 0.34) * scale
    wheel_t = 0.13 if motorcycle else 0.055
    base = (1.45 if motorcycle else 1.05) * scale
    rear = -base / 2

    def part(material, along, across, ya, yb):
        b.oriented_box(vehicle, label_id, material, anchor, heading, along, across, y0 + ya, y0 + yb)

    # handlebar: height range, half width, depth (along)
    bar_y, bar_half, bar_depth = ((0.95, 1.0), 0.38, 0.15) if motorcycle else ((0.98, 1.02), 0.3, 0.06)
    for a in (-base / 2, base / 2):
        b.oriented_ellipsoid(vehicle, label_id, Material.WHEEL, anchor, heading, a, 0.0, y0 + wheel_r,
                             (wheel_r, wheel_r, wheel_t / 2))
    part(Material.BIKE_FRAME, (base / 2 - bar_depth, base / 2), (-bar_half, bar_half), *bar_y)
    if motorcycle:
        part(Material.MOTO_BODY, (rear + 0.1, base / 2), (-0.2, 0.2), 0.35, 0.9)
        part(Material.MOTO_BODY, (rear - 0.15, rear + 0.45), (-0.13, 0.13), 0.62, 0.98)  # tail, number plate
        part(Material.BIKE_FRAME, (rear + 0.05, 0.25), (0.06, 0.26), 0.25, 0.4)  # exhaust
        if rng.random() < 0.3:
            part(Material.MOTO_BODY, (rear - 0.15, rear + 0.3), (-0.21, 0.21), 0.98, 1.3)  # top case
    else:
        part(Material.BIKE_FRAME, (-base / 2, base / 2), (-0.025, 0.025), wheel_r, 0.9)
        part(Material.BIKE_FRAME, (-0.2, 0.05), (-0.08, 0.08), 0.9, 0.985)  # saddle
        part(Material.BIKE_FRAME, (-0.1, 0.1), (-0.1, 0.1), wheel_r - 0.05, wheel_r + 0.08)  # cranks
        part(Material.BIKE_FRAME, (-0.05, 0.05), (-0.19, 0.19), wheel_r - 0.13, wheel_r - 0.04)  # pedals
        if rng.random() < 0.7:  # rear rack and mudguard
            part(Material.BIKE_FRAME, (rear - 0.05, rear + 0.3), (-0.08, 0.08), 2 * wheel_r, 2 * wheel_r + 0.06)
            if rng.random() < 0.35:  # panniers
                part(Material.TOP, (rear - 0.05, rear + 0.3), (-0.2, 0.2), wheel_r + 0.05, 2 * wheel_r + 0.05)
        if rng.random() < 0.15:  # front basket
            part(Material.BIKE_FRAME, (base / 2 - 0.05, base / 2 + 0.25), (-0.17, 0.17), 0.75, 1.0)
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
        # forearm down to the grip, the hand around it (so the handlebar's ends are hidden)
        grip = (bar_half - 0.18, bar_half + 0.005) if side > 0 else (-bar_half - 0.005, -bar_half + 0.18)
        b.oriented_box(rider, ID["rider"], Material.TOP, anchor, heading,
                       (base / 2 - bar_depth - 0.03, base / 2 + 0.03), grip, y0 + bar_y[0] - 0.03,
                       seat + 0.45 * h / 1.75)
    head_r = 0.11 * h / 1.75
    head_y = seat + 0.62 * h / 1.75 + head_r * 1.1
    material = Material.HELMET if (motorcycle or rng.random() < 0.5) else Material.HAIR
    b.oriented_ellipsoid(rider, ID["rider"], Material.SKIN, anchor, heading, 0.05 + lean, 0.0, head_y,
                         (head_r, head_r * 1.15, head_r * 0.95))
    b.oriented_ellipsoid(rider, ID["rider"], material, anchor, heading, lean, 0.0, head_y + head_r * 0.35,
                         (head_r * 1.15 * (1.1 if material == Material.HELMET else 1.0), head_r * 0.9,
                          head_r * 1.1))


def _wheels(b: SceneBuilder, obj, label_id, anchor, heading, y0, length, width, radius, axles=2) -> None:
    positions = np.linspace(-length / 2 + radius * 2.2, length / 2 - radius * 2.2, axles)
    for a in positions:
        for side in (-1, 1):
            b.oriented_ellipsoid(obj, label_id, Material.WHEEL, anchor, heading, float(a),
                                 side * (width / 2 - 0.12), y0 + radius, (radius, radius, 0.13))


def add_car(b: SceneBuilder, anchor, heading: int, y0: float, scale: float) -> None:
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


def add_truck(b: SceneBuilder, anchor, heading: int, y0: float, scale: float) -> None:
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


def add_bus(b: SceneBuilder, anchor, heading: int, y0: float, scale: float) -> None:
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


def add_tram(b: SceneBuilder, anchor, heading: int, y0: float, scale: float) -> None:
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


def add_tree(b: SceneBuilder, x: float, z: float, y0: float, size: float = 1.0) -> None:
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


def add_pole(b: SceneBuilder, x: float, z: float, y0: float, height: float, width: float = 0.16,
             obj: int | None = None) -> int:
    if obj is None:
        obj = b.new_object("pole", ID["pole"])
    half = width / 2
    b.box(obj, ID["pole"], Material.POLE, (x - half, y0, z - half), (x + half, y0 + height, z + half))
    return obj


def add_street_lamp(b: SceneBuilder, x: float, z: float, y0: float, towards_road: int) -> None:
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


# Directions a signal head can face, as object headings (see SceneBuilder.oriented_box): towards
# the camera (−z), away from it (+z, oncoming traffic), and sideways (±x, cross traffic).
LIGHT_FACING = {"camera": 1, "away": 0, "right": 2, "left": 3}


def add_traffic_light(b: SceneBuilder, x: float, z: float, y0: float, towards_road: int, overhead: bool,
                      facing: str = "camera") -> None:
    """A pole with one or two signal heads facing ``facing`` (a key of LIGHT_FACING); ``overhead``
    poles carry an arm over the road with a head hanging from its end.

    A head is a housing of three lamps (200 or 300 mm lenses: 0.32–0.44 m wide, 2.8× as tall),
    most with a backplate (contrast board) 0.1–0.16 m wider on every side, which Cityscapes labels
    as part of the traffic light; some poles carry a twin head beside the first (a turn arrow),
    half a second, lower head, often a smaller two-lamp pedestrian signal. Heads are mounted on
    the pole's face (or under the arm's end)."""
    rng = b.rng
    pole = b.new_object("traffic light pole", ID["pole"])
    height = rng.uniform(3.4, 4.4) if not overhead else rng.uniform(5.4, 6.4)
    pole_w = rng.uniform(0.14, 0.2)
    add_pole(b, x, z, y0, height, pole_w, pole)
    heading = LIGHT_FACING[facing]
    heads: list[tuple[float, float | None, int]] = []  # (x, top, lamps); a second head hangs below the first
    if overhead:
        arm = rng.uniform(3.0, 6.0)
        x_end = x + towards_road * arm
        b.box(pole, ID["pole"], Material.POLE, (min(x, x_end), y0 + height - 0.15, z - 0.07),
              (max(x, x_end), y0 + height, z + 0.07))
        heads.append((x_end - towards_road * 0.3, y0 + height - 0.15, 3))
        if rng.random() < 0.5:  # a second head on the pole itself
            heads.append((x, y0 + rng.uniform(3.4, 3.9), 3))
    else:
        heads.append((x, y0 + height - 0.05, 3))
        if rng.random() < 0.5:  # below it: a pedestrian signal or a repeater
            heads.append((x, None, 2 if rng.random() < 0.6 else 3))
    half_pole = pole_w / 2
    twin = facing != "right" and facing != "left" and rng.random() < 0.4  # e.g. a turn arrow beside the main head
    bottom: float | None = None
    for k, (hx, top, lamps) in enumerate(heads):
        w = rng.uniform(0.32, 0.44) if lamps == 3 else rng.uniform(0.3, 0.36)
        hh, d = w * (2.8 if lamps == 3 else 1.9), rng.uniform(0.25, 0.32)
        board = rng.uniform(0.1, 0.16) if (lamps == 3 and rng.random() < 0.8) else 0.0
        if top is None:  # right under the head above, not lower than 1.6 m
            assert bottom is not None  # only a second head hangs below another
            top = bottom - board - 0.03
            if top - hh - board < y0 + 1.6:
                continue
        bottom = top - hh - board
        # Head centre: in front of the pole (along the lamps' direction, or behind it for heads
        # facing away, whose back or board the camera sees), beside the pole for sideways heads.
        offset = half_pole + (0.03 if board else 0.0) + d / 2
        if facing in ("camera", "away"):
            hz = z - offset if facing == "camera" else z + offset
            cx = hx + towards_road * rng.uniform(0.0, w / 2)
        else:
            hz, cx = z, hx + (offset if facing == "right" else -offset)
        _signal_head(b, cx, hz, heading, w, hh, d, board, top)
        if k == 0 and twin:
            _signal_head(b, cx + towards_road * (w + 2 * board + 0.03), hz, heading, w, hh, d, board, top)


def _signal_head(b: SceneBuilder, cx: float, cz: float, heading: int, w: float, hh: float, d: float, board: float,
                 top: float) -> None:
    """A housing ``w`` wide, ``hh`` tall, ``d`` deep, lamps towards ``heading``, with a backplate
    ``board`` wider on every side behind it (none if 0)."""
    light = b.new_object("traffic light", ID["traffic light"], heading, light=True)
    b.oriented_box(light, ID["traffic light"], Material.TRAFFIC_LIGHT, (cx, cz), heading, (-d / 2, d / 2),
                   (-w / 2, w / 2), top - hh, top)
    if board:
        b.oriented_box(light, ID["traffic light"], Material.SIGNAL_BOARD, (cx, cz), heading, (-d / 2 - 0.03, -d / 2),
                       (-w / 2 - board, w / 2 + board), top - hh - board, top + board)


def add_sign(b: SceneBuilder, x: float, z: float, y0: float, mounted_at: float | None = None) -> None:
    """A sign plate (round, rectangular or a stacked pair) facing the camera, on its own thin pole,
    or at height ``mounted_at`` on an existing pole."""
    rng = b.rng
    if mounted_at is None:
        pole_h = rng.uniform(2.4, 3.3)
        add_pole(b, x, z, y0, pole_h, rng.uniform(0.06, 0.09))
        mounted_at = pole_h - 0.1
    sign = b.new_object("traffic sign", ID["traffic sign"])
    size = rng.uniform(0.5, 0.8)
    shape = rng.integers(0, 3)
    cy = y0 + mounted_at - size / 2
    front, back = z - 0.08, z - 0.04
    if shape == 0:  # round
        b.ellipsoid(sign, ID["traffic sign"], Material.SIGN, (x, cy, z - 0.06), (size / 2, size / 2, 0.025))
    elif shape == 1:  # square / rectangular
        w = size * rng.uniform(0.8, 1.6)
        b.box(sign, ID["traffic sign"], Material.SIGN, (x - w / 2, cy - size / 2, front),
              (x + w / 2, cy + size / 2, back))
    else:  # stacked pair of small plates
        half = size / 2
        b.box(sign, ID["traffic sign"], Material.SIGN, (x - half, cy - 0.05, front), (x + half, cy + half, back))
        b.box(sign, ID["traffic sign"], Material.SIGN, (x - half, cy - size * 0.6, front), (x + half, cy - 0.1, back))


def add_static(b: SceneBuilder, x: float, z: float, y0: float) -> None:
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
            zb = z + dz
            b.box(obj, ID["static"], Material.STATIC, (x - 0.07, y0, zb - 0.07), (x + 0.07, y0 + 0.9, zb + 0.07))
    else:  # advertising column / electrical box
        r = rng.uniform(0.4, 0.7)
        b.box(obj, ID["static"], Material.STATIC, (x - r, y0, z - r), (x + r, y0 + rng.uniform(1.2, 3.0), z + r))


def add_fence(b: SceneBuilder, x0: float, x1: float, z0: float, z1: float, y0: float, railing: bool) -> None:
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
