"""A NumPy ray caster for `scenes`: simple rooms (floor, back and side walls) holding 1 to 4
spheres, boxes and cylinders, with exact per-pixel segmentation, depth and surface normals.

Depth is not written in the brightness: a random light direction and ambient level, random
albedos and procedural textures (checkers, stripes) at random scales shade the image, so depth
needs perspective, occlusion and contact cues, and normals are read from shading under an
unknown light. Every ray is tested against every surface in one vectorised pass per scene."""

from __future__ import annotations

import numpy as np

CLASSES = ("floor", "wall", "sphere", "box", "cylinder")
FLOOR, WALL, SPHERE, BOX, CYLINDER = range(5)
FOV_DEGREES = 60.0
# Scene geometry is laid out in units of 25 cm (rooms 6-10 units deep), and depth is reported
# in metres: values near 1, like the outputs a freshly initialised head starts from.
METRES_PER_UNIT = 0.25


def camera_rays(size: int, height: float, pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin, world directions `[P, 3]` (camera-space z component 1, so a hit's t is its depth)
    and the camera's axes `[3, 3]` (right, up, forward as rows)."""
    f = (size / 2) / np.tan(np.radians(FOV_DEGREES / 2))
    c = np.arange(size) + 0.5 - size / 2
    u, v = np.meshgrid(c / f, -c / f)  # x right, y up
    forward = np.array([0.0, -np.sin(pitch), np.cos(pitch)])
    up = np.array([0.0, np.cos(pitch), np.sin(pitch)])
    right = np.array([1.0, 0.0, 0.0])
    dirs = u.reshape(-1, 1) * right + v.reshape(-1, 1) * up + forward
    return np.array([0.0, height, 0.0]), dirs, np.stack([right, up, forward])


def _plane(o, d, axis: int, value: float, normal) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (value - o[axis]) / d[:, axis]
    t = np.where(t > 1e-6, t, np.inf)
    return t, np.broadcast_to(np.asarray(normal, dtype=np.float64), d.shape)


def _sphere(o, d, center, radius):
    oc = o - center
    a = (d * d).sum(1)
    b = 2 * (d @ oc)
    c = oc @ oc - radius**2
    disc = b * b - 4 * a * c
    t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    t = np.where(t > 1e-6, t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    return t, (p - center) / radius


def _box(o, d, center, half, angle):
    ca, sa = np.cos(angle), np.sin(angle)
    rot = np.array([[ca, 0, sa], [0, 1, 0], [-sa, 0, ca]])  # local -> world (about the vertical axis)
    ol = (o - center) @ rot
    dl = d @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - ol) / dl
        t2 = (half - ol) / dl
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    near = np.nan_to_num(near, nan=-np.inf)
    far = np.nan_to_num(far, nan=np.inf)
    tmin, tmax = near.max(1), far.min(1)
    t = np.where((tmax >= tmin) & (tmin > 1e-6), tmin, np.inf)
    axis = near.argmax(1)
    local = np.zeros_like(dl)
    local[np.arange(len(dl)), axis] = -np.sign(dl[np.arange(len(dl)), axis])
    return t, local @ rot.T


def _cylinder(o, d, center_xz, radius, height):
    ox, oz = o[0] - center_xz[0], o[2] - center_xz[1]
    a = d[:, 0] ** 2 + d[:, 2] ** 2
    b = 2 * (d[:, 0] * ox + d[:, 2] * oz)
    c = ox**2 + oz**2 - radius**2
    disc = b * b - 4 * a * c
    with np.errstate(divide="ignore", invalid="ignore"):
        side = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    y = o[1] + side * d[:, 1]
    side = np.where((side > 1e-6) & (y >= 0) & (y <= height), side, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = (height - o[1]) / d[:, 1]
    px, pz = ox + cap * d[:, 0], oz + cap * d[:, 2]
    cap = np.where((cap > 1e-6) & (px**2 + pz**2 <= radius**2), cap, np.inf)
    t = np.minimum(side, cap)
    pts = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    side_n = np.stack([(pts[:, 0] - center_xz[0]) / radius, np.zeros(len(d)), (pts[:, 2] - center_xz[1]) / radius], 1)
    normal = np.where((cap < side)[:, None], np.array([0.0, 1.0, 0.0]), side_n)
    return t, normal


def _texture(kind: int, coords: np.ndarray, scale: float, phase: float) -> np.ndarray:
    """Procedural texture in [0, 1]: checkers, stripes or smooth bands."""
    a, b = coords[:, 0] / scale + phase, coords[:, 1] / scale
    if kind == 0:
        return ((np.floor(a) + np.floor(b)) % 2).astype(np.float64)
    if kind == 1:
        return (np.floor(a) % 2).astype(np.float64)
    return 0.5 + 0.5 * np.sin(2 * np.pi * (a + 0.5 * b))


def render_scene(rng: np.random.Generator, size: int = 64):
    """One scene: image `[H, W, 3]` in [0, 1], seg `[H, W]` (-1 in holes), depth `[H, W, 1]`
    (0 in holes), normals `[H, W, 3]` (unit, camera frame: x right, y up, z forward, facing the
    camera; 0 in holes), in the NYUv2 layout's conventions."""
    height, pitch = rng.uniform(1.0, 2.0), np.radians(rng.uniform(5, 25))
    o, d, axes = camera_rays(size, height, pitch)
    back, side = rng.uniform(6.0, 10.0), rng.uniform(2.5, 4.5)
    surfaces = [  # (t, world normal, class, albedo, texture)
        (*_plane(o, d, 1, 0.0, (0, 1, 0)), FLOOR, "xz"),
        (*_plane(o, d, 2, back, (0, 0, -1)), WALL, "xy"),
        (*_plane(o, d, 0, -side, (1, 0, 0)), WALL, "zy"),
        (*_plane(o, d, 0, side, (-1, 0, 0)), WALL, "zy"),
    ]
    for _ in range(rng.integers(1, 5)):
        shape = rng.integers(SPHERE, CYLINDER + 1)
        x, z = rng.uniform(-side + 0.8, side - 0.8), rng.uniform(2.0, back - 1.0)
        if shape == SPHERE:
            r = rng.uniform(0.3, 0.9)
            surfaces.append((*_sphere(o, d, np.array([x, r, z]), r), SPHERE, None))
        elif shape == BOX:
            half = rng.uniform(0.25, 0.8, size=3)
            surfaces.append((*_box(o, d, np.array([x, half[1], z]), half, rng.uniform(0, np.pi / 2)), BOX, None))
        else:
            surfaces.append((*_cylinder(o, d, (x, z), rng.uniform(0.2, 0.6), rng.uniform(0.5, 1.8)), CYLINDER, None))
    ts = np.stack([s[0] for s in surfaces])
    nearest = ts.argmin(0)
    t = ts[nearest, np.arange(len(d))]
    normals_w = np.stack([s[1] for s in surfaces])[nearest, np.arange(len(d))]
    seg = np.array([s[2] for s in surfaces])[nearest]
    points = o + t[:, None] * d
    # Camera-frame normals, turned to face the camera.
    normals = normals_w @ axes.T
    cam_dirs = d @ axes.T
    normals *= np.where((normals * cam_dirs).sum(1, keepdims=True) > 0, -1.0, 1.0)
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)

    light = np.array([rng.uniform(-1, 1), rng.uniform(0.6, 1.5), rng.uniform(-1.0, 0.3)])
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.15, 0.45)
    shade = ambient + (1 - ambient) * np.clip((normals_w * light).sum(1), 0, None)
    colour = np.empty((len(d), 3))
    for k, (_, _, cls, plane) in enumerate(surfaces):
        hit = nearest == k
        if not hit.any():
            continue
        albedo = rng.uniform(0.2, 1.0, size=3)
        if plane is not None:
            other = rng.uniform(0.1, 0.9, size=3)
            coords = points[hit][:, ["xyz".index(plane[0]), "xyz".index(plane[1])]]
            pattern = _texture(int(rng.integers(3)), coords, rng.uniform(0.25, 1.2), rng.uniform(0, 1))
            colour[hit] = albedo * pattern[:, None] + other * (1 - pattern[:, None])
        else:
            colour[hit] = albedo
    image = colour * shade[:, None] * rng.uniform(0.7, 1.2) + rng.normal(0, 0.02, size=colour.shape)
    image = np.clip(image, 0, 1).reshape(size, size, 3)
    seg = seg.reshape(size, size).astype(np.int64)
    depth = t.reshape(size, size, 1) * METRES_PER_UNIT
    normals = normals.reshape(size, size, 3)
    # The reference rule calls a normal valid when its components do not sum to 0: nudge the few
    # valid ones that do, so the rule keeps them.
    zero_sum = np.abs(normals.sum(-1)) < 1e-6
    normals[zero_sum] += np.array([1e-3, 0, 0])
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    # Sensor-like holes: no depth, no normal, no label.
    for _ in range(rng.integers(0, 3)):
        h, w = rng.integers(3, max(4, size // 5), size=2)  # 3..12 px at 64x64; 3 px on tiny renders
        top, left = rng.integers(0, size - h), rng.integers(0, size - w)
        seg[top:top + h, left:left + w] = -1
        depth[top:top + h, left:left + w] = 0
        normals[top:top + h, left:left + w] = 0
    return image.astype(np.float32), seg, depth.astype(np.float32), normals.astype(np.float32)
