"""Geometry → per-pixel buffers: which primitive is seen, at what depth, on which face.

Vectorised ray casting with a z-buffer:

1. The ground is intersected analytically for every pixel: a ray first meets the sidewalk level
   (y = curb height) and, if that point is not raised ground, the road level (y = 0); a ray that
   passes the curb between the two levels has hit the curb face. The hit point is then classified
   into road / lane mark / parking / sidewalk / grass / bare ground from the :class:`GroundLayout`.
2. Every box and ellipsoid is intersected exactly, but only over the screen rectangle it can
   cover (its bounding box clipped to the near plane and projected), and written where it is
   closer than what the z-buffer holds. The cost is proportional to covered area, not to the
   number of primitives times the image size.

The buffers are all a look needs: the primitive index per pixel (→ label, instance, material,
object), the z-depth (the ray parameter; rays have unit camera-z component), and the face code
(box face normal, curved, or ground). World hit points and distances follow from depth and rays.

Cast shadows (:func:`ground_shadow`) are computed in the same spirit: for every shadow caster, the
ground pixels inside the screen rectangle of its shadow are tested for whether the ray towards the
sun passes through the caster's bounding box.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from udaseg.data.minicity.scene import BOX, ELLIPSOID, GROUND, Material, Scene

NEAR = 0.3  # metres; nothing closer to the camera is drawn
FAR = 2000.0  # ground beyond this is treated as sky (below the horizon line it is sub-pixel anyway)
SKY = -1
BATCH_AREA = 4096  # primitives covering at most this many pixels are drawn together (_draw_small)

# Face codes: boxes 0..5 = normal −x, +x, −y, +y, −z, +z; 6 = ellipsoid; the ground is +y (3) and
# the curb faces are ±x.
FACE_NORMALS = np.array([[-1, 0, 0], [1, 0, 0], [0, -1, 0], [0, 1, 0], [0, 0, -1], [0, 0, 1]], dtype=np.float32)
CURVED = 6
_NORMAL_TABLE = np.concatenate([FACE_NORMALS, np.zeros((1, 3), np.float32)]).T.copy()  # (3, 7)


@dataclass
class Render:
    scene: Scene
    rays: np.ndarray  # (3, H, W) float32
    prim: np.ndarray  # (H, W) int32, SKY = −1
    depth: np.ndarray  # (H, W) float32 z-depth in metres, inf for sky
    face: np.ndarray  # (H, W) int8

    @property
    def sky(self) -> np.ndarray:
        return self.prim == SKY

    def distance(self) -> np.ndarray:
        """Euclidean distance from the camera (inf for sky): what fog attenuates over."""
        return self.depth * np.sqrt((self.rays ** 2).sum(axis=0))

    def points(self) -> np.ndarray:
        """(3, H, W) world hit points (sky pixels hold non-finite values)."""
        with np.errstate(invalid="ignore"):
            return self.scene.camera.position.astype(np.float32)[:, None, None] + self.rays * self.depth

    def finite_points(self) -> np.ndarray:
        """:meth:`points` with sky pixels at the origin (for code that masks them out anyway)."""
        return np.where(self.sky, np.float32(0), self.points())

    def label_ids(self) -> np.ndarray:
        """(H, W) uint8 Cityscapes label ids (sky = 23)."""
        table = np.append(self.scene.label, np.uint8(23))
        return table[self.prim]  # SKY (−1) picks the appended sky id

    def synthia_ids(self) -> np.ndarray:
        table = np.append(self.scene.synthia_label, np.uint8(1))
        return table[self.prim]

    def instance_ids(self) -> np.ndarray:
        table = np.append(self.scene.instance, np.int32(0))
        return table[self.prim]

    def materials(self) -> np.ndarray:
        table = np.append(self.scene.material, np.uint8(255))
        return table[self.prim]

    def normals(self) -> np.ndarray:
        """(3, H, W) unit surface normals (zero for sky)."""
        normals = np.take(_NORMAL_TABLE, self.face, axis=1)  # curved → zero, filled below
        normals[:, self.sky] = 0
        curved = self.face == CURVED
        if curved.any():
            idx = self.prim[curved]
            centre = self.scene.geometry[idx, :3].T.astype(np.float32)
            radii = self.scene.geometry[idx, 3:].T.astype(np.float32)
            points = self.points()[:, curved]
            n = (points - centre) / radii ** 2
            normals[:, curved] = n / np.maximum(np.linalg.norm(n, axis=0), 1e-6)
        return normals


def render(scene: Scene) -> Render:
    camera = scene.camera
    rays = camera.rays()
    height, width = rays.shape[1:]
    prim = np.full((height, width), SKY, dtype=np.int32)
    depth = np.full((height, width), np.inf, dtype=np.float32)
    face = np.full((height, width), 3, dtype=np.int8)
    _render_ground(scene, rays, prim, depth, face)

    origin = camera.position.astype(np.float32)
    with np.errstate(divide="ignore"):
        inv_rays = 1.0 / np.where(np.abs(rays) < 1e-9, 1e-9, rays)
    rects = _screen_rects(scene)
    visible = rects[:, 0] >= 0
    area = (rects[:, 1] - rects[:, 0]) * (rects[:, 3] - rects[:, 2])
    geometry = scene.geometry.astype(np.float32)
    for index in np.flatnonzero(visible & (area > BATCH_AREA)):
        v0, v1, u0, u1 = rects[index]
        window = (slice(v0, v1), slice(u0, u1))
        lo, hi = geometry[index, :3, None, None], geometry[index, 3:, None, None]
        if scene.kind[index] == BOX:
            t, hit_face = _intersect_box(lo, hi, origin, inv_rays[:, v0:v1, u0:u1])
        else:
            t = _intersect_ellipsoid(lo, hi, origin, rays[:, v0:v1, u0:u1])
            hit_face = CURVED
        closer = t < depth[window]
        if not closer.any():
            continue
        np.copyto(depth[window], t, where=closer)
        np.copyto(prim[window], np.int32(index), where=closer)
        np.copyto(face[window], np.asarray(hit_face, dtype=np.int8), where=closer)
    small = np.flatnonzero(visible & (area <= BATCH_AREA))
    _draw_small(scene, small, rects, origin, rays, inv_rays, prim, depth, face)
    return Render(scene, rays, prim, depth, face)


# ---------------------------------------------------------------------------------------------
def _render_ground(scene: Scene, rays, prim, depth, face) -> None:
    ground = scene.ground
    origin = scene.camera.position
    down = rays[1] < -1e-6
    if not down.any():
        return
    dx, dy, dz = rays[0][down], rays[1][down], rays[2][down]
    # Sidewalk level first: a ray descending towards the ground crosses it before the road level.
    t_top = (ground.curb_height - origin[1]) / dy
    x_top, z_top = origin[0] + t_top * dx, origin[2] + t_top * dz
    t_road = -origin[1] / dy
    x_road, z_road = origin[0] + t_road * dx, origin[2] + t_road * dz
    raised_top = ground.is_raised(x_top, z_top) & (t_top > 0)
    raised_road = ground.is_raised(x_road, z_road)
    # Above road-level ground at the sidewalk level, inside raised ground at the road level: the ray
    # entered the raised ground through a vertical curb face in between.
    curb = ~raised_top & raised_road
    t = np.where(raised_top, t_top, t_road).astype(np.float32)
    x = np.where(raised_top, x_top, x_road)
    z = np.where(raised_top, z_top, z_road)
    material = np.where(raised_top, _classify_raised(ground, x, z), _classify_road(ground, x, z))
    material = np.where(curb, np.uint8(Material.CURB), material)
    curb_face_code = np.full(curb.shape, 3, dtype=np.int8)
    if curb.any():
        t_curb, code = _curb_hit(ground, origin, dx[curb], dz[curb], t_top[curb], t_road[curb])
        t[curb] = t_curb
        curb_face_code[curb] = code
    visible = (t > NEAR) & (t < FAR)
    rows, cols = np.nonzero(down)
    rows, cols = rows[visible], cols[visible]
    depth[rows, cols] = t[visible]
    prim[rows, cols] = _ground_prim_index(material[visible])
    face[rows, cols] = curb_face_code[visible]


def _curb_hit(ground, origin, dx, dz, t_top, t_road):
    """Depth and face code where rays enter raised ground between the two levels: the first curb
    plane (|x| = road_half along the street, or a side street's rim across it) crossed inside
    [t_top, t_road]; the road-level hit where none is (sub-pixel cases near the horizon)."""
    best = t_road.astype(np.float32).copy()
    code = np.full(dx.shape, 3, dtype=np.int8)
    planes = [(0, edge, 0 if edge > 0 else 1) for edge in (ground.road_half, -ground.road_half)]
    for _, z0, z1, rim in ground.side_streets:
        planes += [(2, z0 + rim, 5), (2, z1 - rim, 4)]
    for axis, value, face_code in planes:
        direction, start = (dx, origin[0]) if axis == 0 else (dz, origin[2])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (value - start) / direction
        ok = (t >= t_top - 1e-3) & (t <= best)
        best = np.where(ok, t, best)
        code = np.where(ok, np.int8(face_code), code)
    return best, code


def _ground_prim_index(material: np.ndarray) -> np.ndarray:
    # Ground materials are the first primitives, in GROUND_MATERIALS order, which is Material order.
    return material.astype(np.int32)


def _classify_raised(ground, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    out = np.full(x.shape, np.uint8(Material.SIDEWALK), dtype=np.uint8)
    lateral = np.abs(x) - ground.road_half
    for s in (0, 1):
        on_side = (x > 0) if s == 1 else (x <= 0)
        strip, walk = ground.strip_width[s], ground.sidewalk_width[s]
        in_strip = on_side & (lateral < strip)
        out[in_strip] = Material.TERRAIN
        beyond = on_side & (lateral >= strip + walk)
        if beyond.any() and len(ground.lot_starts[s]):
            lot = np.clip(np.searchsorted(ground.lot_starts[s], z[beyond], side="right") - 1, 0, None)
            out[beyond] = ground.lot_front[s][lot]
    for side, z0, z1, _rim in ground.side_streets:  # corners of a side street are paved
        on_side = (x > ground.road_half) if side == 1 else (x < -ground.road_half)
        out[on_side & (z > z0) & (z < z1)] = Material.SIDEWALK
    return out


def _classify_road(ground, x: np.ndarray, z: np.ndarray) -> np.ndarray:
    out = np.full(x.shape, np.uint8(Material.ROAD), dtype=np.uint8)
    ax = np.abs(x)
    on_main = ax <= ground.road_half
    for s, z0, z1, width in ground.parking_bays:
        on_side = (x > 0) if s == 1 else (x <= 0)
        out[on_side & (ax > ground.road_half - width) & on_main & (z > z0) & (z < z1)] = Material.PARKING
    marks = np.zeros(x.shape, dtype=bool)
    for x_line, width, dashed in ground.lane_lines:
        line = np.abs(x - x_line) < width / 2
        if dashed:
            line &= np.mod(z, 9.0) < 3.0
        marks |= line
    for x_rail in ground.rails:
        marks |= np.abs(x - x_rail) < 0.05
    for z0, z1 in ground.crosswalks:
        marks |= on_main & (z > z0) & (z < z1) & (np.mod(x, 1.0) < 0.5)
    for s, z0, z1, width in ground.parking_bays:  # bay separators
        on_side = (x > 0) if s == 1 else (x <= 0)
        bay = on_side & (ax > ground.road_half - width) & on_main & (z > z0) & (z < z1)
        marks |= bay & (np.mod(z - z0, 5.5) < 0.12)
    out[marks & on_main] = Material.LANE_MARK
    return out


# ---------------------------------------------------------------------------------------------
_EDGES = np.array([(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)])
_CORNER_BITS = np.array([[(c >> k) & 1 for k in range(3)] for c in range(8)], dtype=np.float64)  # (8, 3)


def _bounding_boxes(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    geometry = scene.geometry
    lo = geometry[:, :3].copy()
    hi = geometry[:, 3:].copy()
    ell = scene.kind == ELLIPSOID
    lo[ell] = geometry[ell, :3] - geometry[ell, 3:]
    hi[ell] = geometry[ell, :3] + geometry[ell, 3:]
    return lo, hi


def _screen_rects(scene: Scene, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
                  solid: np.ndarray | None = None) -> np.ndarray:
    """(N, 4) int pixel rectangles (v0, v1, u0, u1) covering each primitive's bounding box
    clipped to the near plane; v0 = −1 where nothing is visible."""
    camera = scene.camera
    if lo is None:
        lo, hi = _bounding_boxes(scene)
        solid = scene.kind != GROUND
    n = len(lo)
    corners = lo[:, None, :] + (hi - lo)[:, None, :] * _CORNER_BITS[None]  # (N, 8, 3)
    cam = camera.to_camera(corners.reshape(-1, 3)).reshape(n, 8, 3)
    z = cam[..., 2]
    # Exact clipping of a convex polytope: its visible vertices plus edge/near-plane crossings.
    a, b = cam[:, _EDGES[:, 0]], cam[:, _EDGES[:, 1]]
    za, zb = a[..., 2], b[..., 2]
    crossing = (za - NEAR) * (zb - NEAR) < 0
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(crossing, (NEAR - za) / (zb - za), 0.0)
    cut = a + (b - a) * s[..., None]
    pts = np.concatenate([cam, cut], axis=1)  # (N, 20, 3)
    valid = np.concatenate([z >= NEAR, crossing], axis=1)
    pz = np.where(valid, np.maximum(pts[..., 2], NEAR), 1.0)
    u = camera.cx + camera.focal * pts[..., 0] / pz
    v = camera.cy - camera.focal * pts[..., 1] / pz
    big = 1e9
    u0 = np.where(valid, u, big).min(axis=1)
    u1 = np.where(valid, u, -big).max(axis=1)
    v0 = np.where(valid, v, big).min(axis=1)
    v1 = np.where(valid, v, -big).max(axis=1)
    u0 = np.clip(np.floor(u0 - 0.5), 0, camera.width).astype(np.int64)
    u1 = np.clip(np.ceil(u1 + 0.5) + 1, 0, camera.width).astype(np.int64)
    v0 = np.clip(np.floor(v0 - 0.5), 0, camera.height).astype(np.int64)
    v1 = np.clip(np.ceil(v1 + 0.5) + 1, 0, camera.height).astype(np.int64)
    visible = valid.any(axis=1) & (u1 > u0) & (v1 > v0) & solid
    rects = np.stack([v0, v1, u0, u1], axis=1)
    rects[~visible] = -1
    return rects


def _draw_small(scene, indices, rects, origin, rays, inv_rays, prim, depth, face) -> None:
    """Draw many small primitives at once: every (primitive, pixel of its rectangle) pair is
    intersected in one vectorised pass, and each pixel keeps its nearest hit if it beats the
    z-buffer. Same result as drawing them one by one, without the per-primitive overhead."""
    if not len(indices):
        return
    width = prim.shape[1]
    v0, v1, u0, u1 = rects[indices].T
    w = u1 - u0
    n = (v1 - v0) * w
    total = int(n.sum())
    owner = np.repeat(indices, n)
    local = np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    w_rep = np.repeat(w, n)
    pix = (np.repeat(v0, n) + local // w_rep) * width + np.repeat(u0, n) + local % w_rep
    geometry = scene.geometry[owner].T.astype(np.float32)  # (6, P)
    is_box = scene.kind[owner] == BOX
    t = np.full(total, np.inf, dtype=np.float32)
    hit_face = np.full(total, CURVED, dtype=np.int8)
    b = np.flatnonzero(is_box)
    t[b], hit_face[b] = _intersect_box(geometry[:3, b], geometry[3:, b], origin, inv_rays.reshape(3, -1)[:, pix[b]])
    e = np.flatnonzero(~is_box)
    t[e] = _intersect_ellipsoid(geometry[:3, e], geometry[3:, e], origin, rays.reshape(3, -1)[:, pix[e]])
    depth_flat = depth.reshape(-1)
    keep = np.flatnonzero(t < depth_flat[pix])
    order = keep[np.lexsort((t[keep], pix[keep]))]  # by pixel, nearest first (ties: lower index)
    pix, t, owner, hit_face = pix[order], t[order], owner[order], hit_face[order]
    first = np.ones(len(pix), dtype=bool)
    first[1:] = pix[1:] != pix[:-1]
    depth_flat[pix[first]] = t[first]
    prim.reshape(-1)[pix[first]] = owner[first]
    face.reshape(-1)[pix[first]] = hit_face[first]


def _intersect_box(lo, hi, origin, inv_rays):
    """Slab test of rays (3, ...) against boxes ``lo``/``hi`` (3, ...) (broadcast). Returns the entry
    depth (inf where missed) and the face code. The camera is outside every box, so the entry face
    on each axis is the one facing the camera."""
    o = origin.reshape((3,) + (1,) * (inv_rays.ndim - 1))
    t_lo = (lo - o) * inv_rays
    t_hi = (hi - o) * inv_rays
    t_near = np.minimum(t_lo, t_hi)
    t_far = np.maximum(t_lo, t_hi)
    entry = np.maximum(np.maximum(t_near[0], t_near[1]), t_near[2])
    exit_ = np.minimum(np.minimum(t_far[0], t_far[1]), t_far[2])
    t = np.where((entry <= exit_) & (entry > NEAR), entry, np.float32(np.inf))
    # Entry face: on the slab entered last; its normal points back towards the camera (the +normal
    # face where the camera is beyond the box's high side on that axis).
    code = (np.array([0, 2, 4], dtype=np.int8).reshape((3,) + (1,) * (t_near.ndim - 1)) + (o > hi)).astype(np.int8)
    face = np.where(t_near[0] == entry, code[0], np.where(t_near[1] == entry, code[1], code[2]))
    return t, face.astype(np.int8, copy=False)


def _intersect_ellipsoid(centre, radii, origin, rays):
    o = (origin.reshape((3,) + (1,) * (rays.ndim - 1)) - centre) / radii
    d = rays / radii
    a = (d * d).sum(axis=0)
    b = (o * d).sum(axis=0)
    c = (o * o).sum(axis=0) - 1.0
    disc = b * b - a * c
    hit = disc >= 0
    t = (-b - np.sqrt(np.where(hit, disc, 0))) / a
    return np.where(hit & (t > NEAR), t, np.float32(np.inf)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
SHADOW_LABELS = frozenset((11, 12, 13, 21, 24, 25, 26, 27, 28, 31, 32, 33, 17, 4))


def ground_shadow(r: Render) -> np.ndarray:
    """(H, W) float32 in {0, 1}: ground pixels whose ray to the sun passes through the bounding
    box of an object (buildings, walls, vegetation, vehicles, people, poles)."""
    scene = r.scene
    sun = scene.sun
    shadow = np.zeros(r.prim.shape, dtype=np.float32)
    ground_px = (r.prim >= 0) & (r.prim < 7)
    if sun[1] <= 0.05 or not ground_px.any():
        return shadow
    # One bounding box per object (a person's parts cast one shadow).
    lo_all, hi_all = _bounding_boxes(scene)
    obj_idx = scene.object_index
    mask = obj_idx >= 0
    n_obj = len(scene.objects)
    if n_obj == 0:
        return shadow
    lo = np.full((n_obj, 3), np.inf)
    hi = np.full((n_obj, 3), -np.inf)
    np.minimum.at(lo, obj_idx[mask], lo_all[mask])
    np.maximum.at(hi, obj_idx[mask], hi_all[mask])
    labels = np.zeros(n_obj, dtype=np.int64)
    labels[obj_idx[mask]] = scene.label[mask]
    keep = np.isfinite(lo).all(axis=1) & np.isin(labels, list(SHADOW_LABELS))
    lo, hi = lo[keep], hi[keep]
    if not len(lo):
        return shadow
    slope = sun[[0, 2]] / sun[1]  # horizontal shift per metre of height, towards the sun
    # The shadow region on the ground: the footprint swept away from the sun up to the top height.
    sh_lo = lo.copy()
    sh_hi = hi.copy()
    reach = -slope[None, :] * hi[:, 1:2]
    sh_lo[:, 0] = np.minimum(lo[:, 0], lo[:, 0] + reach[:, 0])
    sh_hi[:, 0] = np.maximum(hi[:, 0], hi[:, 0] + reach[:, 0])
    sh_lo[:, 2] = np.minimum(lo[:, 2], lo[:, 2] + reach[:, 1])
    sh_hi[:, 2] = np.maximum(hi[:, 2], hi[:, 2] + reach[:, 1])
    sh_lo[:, 1], sh_hi[:, 1] = 0.0, scene.ground.curb_height
    rects = _screen_rects(scene, sh_lo, sh_hi, np.ones(len(lo), dtype=bool))
    points = r.finite_points()
    for k in np.flatnonzero(rects[:, 0] >= 0):
        v0, v1, u0, u1 = rects[k]
        gx = points[0, v0:v1, u0:u1]
        gy = points[1, v0:v1, u0:u1]
        gz = points[2, v0:v1, u0:u1]
        # Heights y at which the sun ray from (gx, gy, gz) is inside the box, per axis.
        y_lo = np.maximum(np.full(gx.shape, lo[k, 1], dtype=np.float32), gy + 0.05)
        y_hi = np.full(gx.shape, hi[k, 1], dtype=np.float32)
        for axis, g in ((0, gx), (1, gz)):
            s = slope[axis]
            box_axis = 0 if axis == 0 else 2
            if abs(s) < 1e-6:
                inside = (g >= lo[k, box_axis]) & (g <= hi[k, box_axis])
                y_hi = np.where(inside, y_hi, -np.inf)
                continue
            a = (lo[k, box_axis] - g) / s + gy
            c = (hi[k, box_axis] - g) / s + gy
            y_lo = np.maximum(y_lo, np.minimum(a, c))
            y_hi = np.minimum(y_hi, np.maximum(a, c))
        hit = (y_lo <= y_hi) & ground_px[v0:v1, u0:u1]
        shadow[v0:v1, u0:u1][hit] = 1.0
    return shadow
