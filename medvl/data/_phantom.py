"""Phantom frontal chest radiograph renderer used by the synthetic dataset.

The phantom is a sum of soft-edged analytic shapes in an attenuation-like "density"
map (bright = dense, as on a correctly displayed radiograph): body outline, two
aerated lungs cut by diaphragm domes, mediastinum, heart, spine, trachea, clavicles,
posterior ribs, hila and a vessel-like lung marking texture, plus per-study exposure,
contrast and noise. Findings modify the same map (see :func:`render_phantom`).

Geometry lives in isotropic "anatomy" coordinates: ``x`` grows to the image right,
``y`` grows downwards, and one unit is half the shorter image side. Images follow the
radiographic convention that the patient's right is on the image left, so the
patient's right lung has ``x < 0``. A small random rotation, scale and shift of the
whole anatomy is applied per study.

Randomness is split so that anatomy and noise do not depend on which findings are
drawn: rendering the same ``rng`` state with and without a finding yields the same
patient, which is what the visibility tests compare.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Array = np.ndarray
Anatomy = Mapping[str, float]
Lungs = Mapping[str, Mapping[str, Any]]
Maps = dict[str, Array]
Params = Mapping[str, Any]

_SIDE_SIGN = {"right": -1.0, "left": 1.0}
"""Patient side -> sign of ``x`` (patient's right is on the image left)."""


def render_phantom(
    rows: int,
    cols: int,
    *,
    rng: np.random.Generator,
    findings: Mapping[str, Mapping[str, Any]] | None = None,
    view: str = "PA",
) -> Array:
    """Render one phantom chest radiograph.

    Args:
        rows: Image height in pixels.
        cols: Image width in pixels.
        rng: Generator; three child generators are seeded from it for anatomy,
            findings and noise, so the anatomy is identical whether or not findings
            are drawn.
        findings: Finding name -> drawing parameters, for the findings to draw:
            ``cardiomegaly {"ctr"}``, ``pleural_effusion {"sides", "height",
            "strength"}``, ``pneumothorax {"side", "size", "strength"}``,
            ``consolidation {"sides", "zone", "extent", "strength"}``,
            ``nodule {"side", "zone", "radius", "count", "strength"}``,
            ``support_device {"devices"}``. Sides are the patient's ``"left"`` /
            ``"right"``; ``strength`` below 1 draws the subtle version used for
            uncertain labels.
        view: ``"PA"`` or ``"AP"`` (AP magnifies the heart slightly and raises
            the clavicles).

    Returns:
        ``float32`` array of shape ``(rows, cols)`` in ``[0, 1]``; bright = dense.
    """
    findings = dict(findings or {})
    anat_rng, find_rng, noise_rng = (np.random.default_rng(int(k)) for k in rng.integers(0, 2**63, size=3))
    a = _sample_anatomy(anat_rng, view)
    # Anatomy is smooth, so it is drawn at half resolution and upsampled; noise is
    # added at full resolution.
    h, w = (rows + 1) // 2, (cols + 1) // 2
    x, y = _anatomy_grid(h, w, a)
    lungs = {side: _lung_fields(x, y, a, side) for side in ("right", "left")}

    # Aeration (0..1 per lung) darkens; ``extra`` adds density on top of the body.
    aeration = {s: f["depth"].copy() for s, f in lungs.items()}
    markings_gate = {s: f["mask"].copy() for s, f in lungs.items()}
    extra = np.zeros_like(x)

    if "cardiomegaly" in findings:
        a["heart_a"] = float(findings["cardiomegaly"]["ctr"]) * a["tw"] * a["heart_mag"]
    if "pleural_effusion" in findings:
        _draw_effusion(x, y, a, lungs, aeration, extra, findings["pleural_effusion"])
    if "consolidation" in findings:
        _draw_consolidation(x, y, a, lungs, aeration, extra, findings["consolidation"], find_rng)
    if "pneumothorax" in findings:
        _draw_pneumothorax(x, y, a, lungs, aeration, markings_gate, extra, findings["pneumothorax"])
    if "nodule" in findings:
        _draw_nodules(x, y, a, lungs, aeration, extra, findings["nodule"], find_rng)

    solid = np.maximum(_mediastinum(x, y, a), _heart(x, y, a))
    dens = _body_and_bones(x, y, a)
    dens += 0.27 * solid
    dens -= 0.40 * (aeration["right"] + aeration["left"]) * (1.0 - 0.6 * solid)
    vessels = _vessel_texture(noise_rng, h, w)
    for side, f in lungs.items():
        hilum = np.clip(1.0 - np.hypot(x - f["hx"], (y - f["hy"]) * 0.8) / 0.75, 0.0, 1.0)
        dens += (0.05 * vessels * (0.3 + hilum) + 0.10 * hilum**3) * markings_gate[side]
    dens += extra
    if "support_device" in findings:
        dens = _draw_devices(x, y, a, dens, findings["support_device"], find_rng)
    return _expose(dens, noise_rng, a, rows, cols)


# --------------------------------------------------------------------------- anatomy
def _sample_anatomy(rng: np.random.Generator, view: str) -> dict[str, float]:
    """Draw the per-patient geometry and exposure parameters."""
    u = rng.uniform
    tw = u(0.72, 0.82)  # thorax half-width (inner rib margin)
    dome_r = u(0.30, 0.40)
    a = {
        "rot": np.deg2rad(u(-4.0, 4.0)),
        "scale": u(0.92, 1.06),
        "tx": u(-0.05, 0.05),
        "ty": u(-0.04, 0.06),
        "tw": tw,
        "x_in": u(0.05, 0.10),
        "apex": u(-0.76, -0.64),
        "dome_right": dome_r,
        "dome_left": dome_r + u(0.02, 0.08),
        "cp_drop": u(0.16, 0.24),
        "heart_mag": 1.06 if view == "AP" else 1.0,
        "heart_b": u(0.27, 0.32),
        "heart_cy": u(0.14, 0.20),
        "rib_phase": u(0.0, 2.0 * np.pi),
        "rib_period": u(0.15, 0.19),
        "clav_y": u(-0.64, -0.56) - (0.05 if view == "AP" else 0.0),
        "body_a": u(0.88, 0.98),
        "gamma": u(0.8, 1.25),
        "lo": u(-0.06, 0.02),
        "hi": u(1.02, 1.15),
        "noise": u(0.008, 0.03),
        "blur": u(0.4, 1.0),
    }
    a["heart_a"] = u(0.38, 0.47) * tw * a["heart_mag"]  # ctr * thorax half-width
    return a


def _anatomy_grid(rows: int, cols: int, a: Mapping[str, float]) -> tuple[Array, Array]:
    """Pixel centres -> anatomy coordinates (inverse of the random similarity)."""
    half = min(rows, cols) / 2.0
    py = (np.arange(rows, dtype=np.float32) + 0.5 - rows / 2.0) / half
    px = (np.arange(cols, dtype=np.float32) + 0.5 - cols / 2.0) / half
    gx, gy = np.meshgrid(px, py)
    gx, gy = gx - a["tx"], gy - a["ty"]
    c, s = np.cos(a["rot"]), np.sin(a["rot"])
    x = (c * gx + s * gy) / a["scale"]
    y = (-s * gx + c * gy) / a["scale"] - 0.05
    return x.astype(np.float32), y.astype(np.float32)


def _ramp(signed: Array, soft: float) -> Array:
    """Soft inside-mask from a signed value (negative inside), linear over ``soft``."""
    return np.clip(0.5 - signed / soft, 0.0, 1.0)


def _ellipse_r(x: Array, y: Array, cx: float, cy: float, ax: float, by: float) -> Array:
    """Normalised elliptic radius (1 on the boundary)."""
    return np.sqrt(((x - cx) / ax) ** 2 + ((y - cy) / by) ** 2)


def _lung_geometry(a: Mapping[str, float], side: str) -> dict[str, float]:
    """Ellipse and dome parameters of one lung."""
    sign = _SIDE_SIGN[side]
    ax = (a["tw"] - a["x_in"]) / 2.0
    by = 0.92
    return {
        "sign": sign,
        "cx": sign * (a["tw"] + a["x_in"]) / 2.0,
        "cy": a["apex"] + by,
        "ax": ax,
        "by": by,
        "dome": a[f"dome_{side}"],
        "cp": a[f"dome_{side}"] + a["cp_drop"],
        "hx": sign * (a["x_in"] + 0.12),
        "hy": -0.02,
    }


def _lung_fields(x: Array, y: Array, a: Mapping[str, float], side: str) -> dict[str, Any]:
    """Soft lung mask, aeration depth and geometry for one lung."""
    g = _lung_geometry(a, side)
    r = _ellipse_r(x, y, g["cx"], g["cy"], g["ax"], g["by"])
    dome_y = _dome(x, g)
    mask = _ramp(r - 1.0, 0.06) * _ramp(y - dome_y, 0.03)
    depth = mask * np.clip(1.0 - r**4, 0.0, 1.0) ** 0.5
    return {**g, "mask": mask, "depth": depth, "dome_y": dome_y}


def _dome(x: Array, g: Mapping[str, float]) -> Array:
    """Hemidiaphragm height: highest near the lung centre, down into the CP angle."""
    t = np.clip((x - g["cx"] + 0.1 * g["sign"]) / (g["ax"] * 1.1), -1.0, 1.0)
    return g["dome"] + (g["cp"] - g["dome"]) * t**2


def _body_and_bones(x: Array, y: Array, a: Mapping[str, float]) -> Array:
    """Soft tissue, abdomen, spine, clavicles and ribs (trachea subtracted)."""
    body = _ramp(np.abs(x / a["body_a"]) ** 3 + np.abs((y - 0.15) / 1.35) ** 3 - 1.0, 0.15)
    neck = _ramp(np.abs(x) - 0.22, 0.05) * _ramp(y + 0.8, 0.1)
    dens = 0.52 * np.maximum(body, neck)
    dens += 0.06 * _ramp(0.45 - y, 0.3)  # abdomen / liver below the domes
    spine = _ramp(np.abs(x) - 0.065, 0.02)
    discs = 0.85 + 0.15 * np.cos(2.0 * np.pi * y / 0.11)
    dens += 0.06 * spine * discs
    dens -= 0.12 * _ramp(np.abs(x) - 0.035, 0.015) * _ramp(y + 0.12, 0.03)  # trachea
    for sign in (-1.0, 1.0):
        t = np.clip((x * sign - 0.06) / 0.62, 0.0, 1.0)
        yc = a["clav_y"] - 0.14 * t + 0.06 * t**2
        clav = _ramp(np.abs(y - yc) - 0.025, 0.02) * _ramp(x * sign - 0.66, 0.05)
        dens += 0.22 * clav * _ramp(0.06 - x * sign, 0.03)
    thorax = _ramp(_ellipse_r(x, y, 0.0, a["apex"] + 0.95, a["tw"] + 0.04, 0.98) - 1.0, 0.05)
    yc = y + 0.30 * ((np.abs(x) - 0.1) / 0.65) ** 2
    ribs = np.clip(3.0 * np.cos(2.0 * np.pi * yc / a["rib_period"] + a["rib_phase"]) - 1.5, 0.0, 1.0)
    dens += 0.07 * ribs * thorax * _ramp(y - 0.45, 0.1)
    return dens


def _mediastinum(x: Array, y: Array, a: Mapping[str, float]) -> Array:
    """Upper mediastinum with an aortic knob."""
    band = _ramp(np.abs(x - 0.01) - 0.12, 0.04) * _ramp(y - 0.45, 0.05)
    knob = _ramp(_ellipse_r(x, y, 0.10, -0.30, 0.09, 0.08) - 1.0, 0.4)
    return np.maximum(band, knob)


def _heart(x: Array, y: Array, a: Mapping[str, float]) -> Array:
    """Cardiac silhouette: ellipse skewed to the patient's left."""
    ha = a["heart_a"]
    hb = a["heart_b"] * (1.0 + 0.6 * max(ha / a["tw"] - 0.45, 0.0))
    cx = 0.3 * ha - 0.04
    r = _ellipse_r(x, y, cx, a["heart_cy"], ha, hb)
    return _ramp(r - 1.0, 0.08) * _ramp(y - 0.6, 0.1)


def _vessel_texture(rng: np.random.Generator, rows: int, cols: int) -> Array:
    """Branching ridges at the zero crossings of a smooth random field."""
    f = _smooth_field(rng, rows, cols, 26)
    return np.exp(-((f / 0.3) ** 2))


def _smooth_field(rng: np.random.Generator, rows: int, cols: int, cells: int) -> Array:
    """Zero-mean, unit-std smooth random field with ``cells`` blobs per short side.

    White noise on a grid of four samples per cell is Gaussian-filtered and then
    upsampled bilinearly. No BLAS is involved, which keeps it fast under a busy
    process pool and bit-identical for any worker count.
    """
    short = min(rows, cols)
    gh, gw = max(4, round(4 * cells * rows / short)), max(4, round(4 * cells * cols / short))
    grid = _blur(rng.standard_normal((gh, gw), dtype=np.float32), 2.0)
    return _upsample(grid / np.float32(0.141), rows, cols)


def _blur(img: Array, sigma: float) -> Array:
    """Separable Gaussian blur with reflected borders (small sigmas only)."""
    radius = max(1, int(np.ceil(3.0 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / max(sigma, 1e-3)) ** 2)
    taps = (taps / taps.sum()).astype(np.float32)
    for axis in (0, 1):
        pad = [(0, 0), (0, 0)]
        pad[axis] = (radius, radius)
        padded = np.pad(img, pad, mode="reflect")
        n = img.shape[axis]
        out = np.zeros_like(img)
        for k, wgt in enumerate(taps):
            out += wgt * (padded[k:k + n] if axis == 0 else padded[:, k:k + n])
        img = out
    return img


def _upsample(img: Array, rows: int, cols: int) -> Array:
    """Bilinear resize with half-pixel centres (align_corners=False)."""

    def taps(n: int, m: int) -> tuple[Array, Array, Array]:
        pos = np.clip((np.arange(n) + 0.5) * (m / n) - 0.5, 0.0, m - 1)
        i0 = np.floor(pos).astype(np.intp)
        return i0, np.minimum(i0 + 1, m - 1), (pos - i0).astype(np.float32)

    r0, r1, tr = taps(rows, img.shape[0])
    c0, c1, tc = taps(cols, img.shape[1])
    tmp = img[r0] * (1.0 - tr[:, None]) + img[r1] * tr[:, None]
    return tmp[:, c0] * (1.0 - tc) + tmp[:, c1] * tc


def _expose(dens: Array, rng: np.random.Generator, a: Mapping[str, float], rows: int, cols: int) -> Array:
    """Blur, upsample to ``(rows, cols)``, exposure, contrast curve and noise; in [0, 1]."""
    h, w = dens.shape
    dens = _blur(dens, a["blur"] * min(h, w) / 384.0)
    dens += 0.035 * _smooth_field(rng, h, w, 3)
    dens = _upsample(dens, rows, cols)
    img = np.clip((dens - a["lo"]) / (a["hi"] - a["lo"]), 0.0, 1.0) ** a["gamma"]
    img += np.float32(a["noise"]) * rng.standard_normal(img.shape, dtype=np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------- findings
def _draw_effusion(x: Array, y: Array, a: Anatomy, lungs: Lungs, aeration: Maps, extra: Array, p: Params) -> None:
    """Dependent fluid with a lateral meniscus that fills the CP angle and base."""
    strength = float(p.get("strength", 1.0))
    for side in p["sides"]:
        f = lungs[side]
        height = f["cp"] - a["apex"]
        level = f["cp"] - float(p["height"]) * height
        u = np.clip((x - f["cx"]) * f["sign"] / f["ax"], -1.0, 1.0)  # -1 medial, 1 lateral
        surface = level + 0.18 * ((1.0 - u) / 2.0) ** 1.5
        fluid = _ramp(surface - y, 0.08) * _ramp(_ellipse_r(x, y, f["cx"], f["cy"], f["ax"] * 1.04, f["by"]) - 1.0, 0.06)
        aeration[side] *= 1.0 - strength * fluid
        extra += 0.2 * strength * fluid * _ramp(y - f["dome_y"], 0.03)


def _draw_consolidation(
    x: Array, y: Array, a: Anatomy, lungs: Lungs, aeration: Maps, extra: Array, p: Params,
    rng: np.random.Generator,
) -> None:
    """Fluffy cloud of overlapping blobs confined to one lung zone."""
    strength = float(p.get("strength", 1.0))
    extent = float(p.get("extent", 1.0))
    fluff = 0.65 + 0.35 * np.tanh(_smooth_field(rng, *x.shape, 14))
    for side in p["sides"]:
        f = lungs[side]
        cy = rng.uniform(-0.42, -0.18) if p["zone"] == "upper" else rng.uniform(0.02, 0.22)
        lateral = (-0.1, 0.3) if p["zone"] == "upper" else (0.15, 0.45)  # lower: clear of the heart
        cx = f["cx"] + f["sign"] * rng.uniform(*lateral) * f["ax"]
        cloud = np.zeros_like(x)
        for _ in range(int(rng.integers(3, 7))):
            bx = cx + rng.normal(0.0, 0.08 * extent)
            by = cy + rng.normal(0.0, 0.07 * extent)
            s = rng.uniform(0.06, 0.11) * extent
            cloud = np.maximum(cloud, np.exp(-(((x - bx) ** 2 + (y - by) ** 2) / (2 * s * s))))
        cloud = np.clip(1.4 * cloud * fluff, 0.0, 1.0) * f["mask"]
        aeration[side] *= 1.0 - 0.9 * strength * cloud
        extra += 0.15 * strength * cloud


def _draw_pneumothorax(
    x: Array, y: Array, a: Anatomy, lungs: Lungs, aeration: Maps, gate: Maps, extra: Array, p: Params
) -> None:
    """Apicolateral air rim without markings, bounded by a visceral pleural line."""
    strength = float(p.get("strength", 1.0))
    f = lungs[p["side"]]
    side = p["side"]
    k = 1.0 - float(p["size"])
    ox, oy = f["sign"] * (a["x_in"] + 0.05), f["cp"]  # collapse towards the medial base
    xc, yc = ox + (x - ox) / k, oy + (y - oy) / k
    rc = _ellipse_r(xc, yc, f["cx"], f["cy"], f["ax"], f["by"])
    collapsed = _ramp(rc - 1.0, 0.03)
    ptx = f["mask"] * (1.0 - collapsed)
    aeration[side] = aeration[side] * (1.0 - ptx) + ptx * 1.0
    gate[side] *= 1.0 - ptx
    extra -= 0.13 * strength * ptx
    line = np.clip(1.0 - np.abs(rc - 1.0) / 0.022, 0.0, 1.0) * f["mask"]
    extra += 0.16 * strength * line
    extra += 0.05 * strength * collapsed * f["mask"]


def _draw_nodules(
    x: Array, y: Array, a: Anatomy, lungs: Lungs, aeration: Maps, extra: Array, p: Params,
    rng: np.random.Generator,
) -> None:
    """Round dense blobs; radius is a fraction of the lung width."""
    strength = float(p.get("strength", 1.0))
    f = lungs[p["side"]]
    for i in range(int(p.get("count", 1))):
        r = float(p["radius"]) * (1.0 if i == 0 else rng.uniform(0.5, 0.8)) * 2.0 * f["ax"]
        if p["zone"] == "upper":
            ny = rng.uniform(-0.48, -0.12)
        else:
            ny = rng.uniform(0.0, min(0.25, f["dome"] - r - 0.03))
        nx = f["cx"] + f["sign"] * rng.uniform(-0.1, 0.55) * f["ax"]
        d = np.hypot(x - nx, y - ny) / r
        blob = np.clip((1.0 - d) * 5.0, 0.0, 1.0) * np.clip(1.0 - 0.3 * d, 0.0, 1.0)
        aeration[p["side"]] *= 1.0 - 0.9 * strength * blob
        extra += 0.3 * strength * blob


def _draw_devices(x: Array, y: Array, a: Anatomy, dens: Array, p: Params, rng: np.random.Generator) -> Array:
    """High-contrast tubes, lines, ECG electrodes and pacemaker drawn on top."""
    parts = []
    devices = set(p["devices"])
    px = 2.0 / (min(x.shape) * a["scale"])  # one pixel in anatomy units
    if "ett" in devices:
        tip = -0.12 - rng.uniform(0.10, 0.25)
        parts.append((_polyline(x, y, [(0.0, -1.3), (0.005, -0.6), (0.0, tip)]), 0.013, 0.55))
    if "ng_tube" in devices:
        pts = [(-0.02, -1.3), (-0.01, -0.4), (0.04, 0.2), (0.22, 0.55), (0.35, 0.62)]
        parts.append((_polyline(x, y, pts), 0.010, 0.45))
    if "central_line" in devices:
        if rng.random() < 0.5:  # right internal jugular
            pts = [(-0.30, -1.3), (-0.16, -0.80), (-0.07, -0.45), (-0.05, -0.10)]
        else:  # left subclavian
            pts = [(0.62, -0.62), (0.30, -0.55), (0.05, -0.42), (-0.04, -0.12)]
        parts.append((_polyline(x, y, pts), 0.011, 0.5))
    if "pacemaker" in devices:
        bx, by = rng.uniform(0.42, 0.58), rng.uniform(-0.72, -0.58)
        box = _ramp(np.maximum(np.abs(x - bx) / 0.09, np.abs(y - by) / 0.065) - 1.0, 0.1)
        dens = np.maximum(dens, box * 1.3 + (1 - box) * dens)
        pts = [(bx - 0.05, by), (0.15, -0.5), (-0.02, -0.2), (0.02, 0.15), (0.12, 0.32)]
        parts.append((_polyline(x, y, pts), 0.010, 0.55))
    if "ecg_leads" in devices:
        for _ in range(int(rng.integers(2, 5))):
            ex, ey = rng.uniform(-0.7, 0.7), rng.uniform(-0.8, 0.2)
            ring = np.clip(1.0 - np.abs(np.hypot(x - ex, y - ey) - 0.035) / 0.012, 0.0, 1.0)
            dens = np.maximum(dens, dens + 0.6 * ring)
            edge = (np.sign(ex) * 1.6, ey + rng.uniform(-0.4, 0.4))
            parts.append((_polyline(x, y, [(ex, ey), ((ex + edge[0]) / 2, ey + 0.1), edge]), 0.007, 0.35))
    for (sl, dist), width, gain in parts:
        width = max(width, 1.2 * px)
        if sl is not None:
            dens[sl] += gain * np.clip(1.0 - dist / width, 0.0, 1.0) ** 0.5
    return dens


def _polyline(x: Array, y: Array, pts: Sequence[tuple[float, float]]) -> tuple[Any, Array]:
    """Distance to a Chaikin-smoothed polyline, computed on the crop around it.

    Returns:
        ``(slices, dist)``: the ``(rows, cols)`` slices of the crop (``None`` if the
        curve misses the image) and the distance map on that crop.
    """
    pts_arr = np.asarray(pts, dtype=np.float64)
    for _ in range(2):
        q = 0.75 * pts_arr[:-1] + 0.25 * pts_arr[1:]
        r = 0.25 * pts_arr[:-1] + 0.75 * pts_arr[1:]
        pts_arr = np.concatenate([pts_arr[:1], np.stack([q, r], 1).reshape(-1, 2), pts_arr[-1:]])
    # The grid is a similarity with |rotation| <= 4 deg, so the middle row/column
    # bound the crop once a margin covers the tilt over the image.
    m = 0.2
    xr, yc = x[x.shape[0] // 2], y[:, y.shape[1] // 2]
    ci = np.nonzero((xr >= pts_arr[:, 0].min() - m) & (xr <= pts_arr[:, 0].max() + m))[0]
    ri = np.nonzero((yc >= pts_arr[:, 1].min() - m) & (yc <= pts_arr[:, 1].max() + m))[0]
    if ci.size == 0 or ri.size == 0:
        return None, np.empty(0, dtype=np.float32)
    sl = (slice(ri[0], ri[-1] + 1), slice(ci[0], ci[-1] + 1))
    xs, ys = x[sl], y[sl]
    dist = np.full(xs.shape, np.inf, dtype=np.float32)
    for (x0, y0), (x1, y1) in zip(pts_arr[:-1], pts_arr[1:]):
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / max(dx * dx + dy * dy, 1e-12), 0.0, 1.0)
        dist = np.minimum(dist, np.hypot(xs - x0 - t * dx, ys - y0 - t * dy))
    return sl, dist
