"""`remove_background`: cut the subject out, onto transparency or a chosen colour.

Three methods, all working on a copy of at most `WORK_SIDE` pixels on its long
side; the mask is then scaled back up smoothly, feathered if asked, and applied
to the full-size image. All three start from the same model of the background:
- the background is what the frame along the border looks like: k-means clusters
  of each pixel's colour (CIELAB) and of the mean colour and spread of its
  neighbourhood (wide on a textured frame such as grass, gravel, brick or fabric,
  a pixel on a plain or gradient one, whose fitted quadratic surface is taken off
  first so a gradient drops out). A pixel's score is its distance to the nearest
  cluster in units of that cluster's spread; a cluster seen on only one
  side of the frame is a subject cut by that edge (shoulders), not background.
  Pixels scoring well above the background, opened to remove thin background
  lines (mortar, grass blades) and specks, are the rough subject;
- auto: near the rough subject's edge each pixel goes to the nearer of two colour
  models (clusters of the background's colours and of the subject's), which puts
  the edge back on the subject and keeps the holes of a wheel as background;
- grabcut: OpenCV's GrabCut from auto's result (well inside is subject, well
  outside is background; a band of a pixel or two inside the edge and a wide one
  outside it, a fifteenth of the long side, are left to GrabCut's colour models
  and smoothness, so a part of the subject that auto lost to a background of like
  colour, an orange suit on orange parquet, is taken back); the best scores on textures;
- watershed: auto's result grown back to the strongest edges by OpenCV's
  watershed from markers well inside the subject and the background.

`matting: true` (inline `remove_background=METHOD,matting`) gives soft edges to hair
and fur: the mask becomes a trimap (sure subject well inside, sure background well
outside, unknown in a band along the edge whose width is a share of the picture's
size), and closed-form matting estimates the alpha in the band on a copy of at most
`MATTE_SIDE` pixels, its Laplacian applied through a guided filter rather than built.
The alpha is brought back to full size through a guided filter's models, so the fine
edge follows the full-size picture; matting adds about half a second of CPU time to a
12-megapixel photo. The matte replaces the feather; the sidecar notes say whether the
alpha was matted.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar, cast

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image
from pydantic import Field, model_validator

from hotfolder.canvas import Canvas
from hotfolder.errors import InputError
from hotfolder.modes import Color
from hotfolder.ops.engrave import flatten
from hotfolder.ops.registry import Params, operation, positional

Rgb = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

WORK_SIDE = 800  # pixels on the long side of the working copy
GRABCUT_ROUNDS = 2
GRABCUT_REACH = 1 / 15  # unsure band outside auto's edge, of the long side
FRAME = 0.03  # share of each side treated as the frame around the subject
NEIGHBOURHOOD = 1 / 80  # radius of the neighbourhood that texture is measured over, of the side
BACKGROUND_CLUSTERS = 8  # clusters of the frame's features
SIDE_SHARE = 0.03  # share of a side's frame a cluster must cover to be seen there
SMOOTH = 1.0  # median lightness spread on the frame under which a backdrop is smooth
SPREAD_FLOOR = 4.0  # smallest spread of a cluster (CIELAB units), for plain backgrounds
UNLIKE = 2.0  # background score above which a pixel is clearly subject
EDGE_BLUR = (0.3, 0.6)  # colour smoothing at the edge, on a smooth and a textured backdrop
COLOUR_CLUSTERS = 10  # clusters of each colour model near the edge
SAME_COLOUR = 3.0  # CIELAB distance under which a colour is the background's
MIN_OBJECT = 0.001  # regions smaller than this share of the picture are dropped
MIN_SUBJECT = 0.005  # a subject has at least one region of this share of the picture
FLAT = 2.0  # standard deviation under which a picture is one colour
MATTE_SIDE = 400  # pixels on the long side of the copy that matting solves on
MATTE_BAND = 0.04  # unknown band either side of the edge, as a share of the long side
MATTE_RADIUS = 3  # matting windows of 7x7 pixels: wider ones converge in fewer rounds
MATTE_EPSILON = 2e-6  # regularisation of each window's colour covariance (colours 0-1)
MATTE_ROUNDS = 300  # conjugate gradient rounds at most (about 50 are needed)
MATTE_TOLERANCE = 1e-3  # the solve stops when the residual is this share of where it began
GUIDE_RADIUS = 1  # guided filter bringing the matte to full size: window radius (small copy)
GUIDE_EPSILON = 1e-4  # and its regularisation: lower follows finer detail


class BackgroundParams(Params):
    method: Literal["auto", "grabcut", "watershed"] = Field(
        "auto", description="auto (edges and contours), grabcut (textured backgrounds), watershed"
    )
    feather: float = Field(1.0, ge=0, le=200, description="soften the cut edge, in pixels")
    background: Color = Field(
        "transparent", validate_default=True,
        description="transparent (PNG/WebP), or a colour to place the subject on",
    )
    matting: bool = Field(
        False, description="soft edges (hair, fur): estimate the alpha along the edge by "
        "closed-form matting instead of a hard cut"
    )

    @model_validator(mode="after")
    def _feather_or_matting(self) -> BackgroundParams:
        if self.matting and "feather" in self.model_fields_set and self.feather > 0:
            raise ValueError("feather softens the hard cut only; matting makes its own soft edge")
        return self


FLAG = "matting"
PLACES = positional(["method", "feather", "background"])


def parse_background(args: list[str]) -> dict[str, Any]:
    """`grabcut`, `auto,2,white` (method, feather, colour), and the word `matting` anywhere."""
    words = [word.strip() for arg in args for word in arg.split(",")]
    kept = [word for word in words if word.lower() != FLAG]
    return PLACES(kept) | ({FLAG: True} if len(kept) < len(words) else {})


def working_copy(rgb: Rgb, side: int) -> Rgb:
    """The picture shrunk (area-averaged) to at most `side` pixels on its long side."""
    height, width = rgb.shape[:2]
    scale = side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(cv2.resize(rgb, size, interpolation=cv2.INTER_AREA), np.uint8)


Floats = npt.NDArray[np.float32]
Matte = npt.NDArray[np.floating[Any]]  # alpha, 0-1
Sampled = TypeVar("Sampled", bound=npt.NDArray[Any])


def lab_colours(rgb: Rgb, blur: float) -> Floats:
    """The picture in CIELAB (L 0-100), smoothed by a Gaussian of `blur` pixels."""
    lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2Lab)
    return np.asarray(cv2.GaussianBlur(lab, (0, 0), blur), np.float32)


def frame_sides(shape: tuple[int, ...]) -> npt.NDArray[np.int8]:
    """Which side of the frame (0-3: left, right, top, bottom) each pixel is on; -1 inside."""
    height, width = shape[:2]
    band = max(1, round(FRAME * min(height, width)))
    sides = np.full((height, width), -1, np.int8)
    sides[:, :band], sides[:, -band:], sides[:band], sides[-band:] = 0, 1, 2, 3
    return sides


def smooth_backdrop(rgb: Rgb) -> bool:
    """Whether the frame is smooth (plain or a gradient) rather than textured."""
    side = max(rgb.shape[:2])
    lightness = lab_colours(rgb, 0.1)[..., 0]
    radius = max(2.0, side / 160)
    mean = cv2.GaussianBlur(lightness, (0, 0), radius)
    spread = np.sqrt(np.maximum(cv2.GaussianBlur(lightness * lightness, (0, 0), radius)
                                - mean * mean, 0))
    return float(np.median(spread[frame_sides(rgb.shape) >= 0])) < SMOOTH


def neighbourhood(rgb: Rgb, smooth: bool) -> float:
    """The radius texture is measured over: wide on a textured frame, a pixel on a smooth one,
    where a wide one would only blur the subject's edge."""
    side = max(rgb.shape[:2])
    return float(max(0.7, side / 400) if smooth else max(2.0, side * NEIGHBOURHOOD))


def _surface_terms(y: Floats, x: Floats) -> list[Floats]:
    """The terms of a quadratic surface in x and y (fractions of the picture's size)."""
    return [np.ones_like(x), x, y, x * x, x * y, y * y]


def backdrop_surface(lab: Floats, where: Mask) -> Floats:
    """The backdrop's smooth colour at every pixel: a quadratic surface fitted to the pixels
    `where`, refitted on those near it so that a subject reaching the border does not pull it."""
    height, width = lab.shape[:2]
    ys, xs = np.nonzero(where)
    step = max(1, len(ys) // 20000)  # a sample is plenty for six coefficients
    ys, xs = ys[::step], xs[::step]
    design = np.stack(_surface_terms(ys.astype(np.float32) / height,
                                     xs.astype(np.float32) / width), axis=1)
    colours = lab[ys, xs]
    inliers = np.ones(len(ys), bool)
    for _ in range(3):
        coeffs, *_ = np.linalg.lstsq(design[inliers], colours[inliers], rcond=None)
        off = np.sqrt(((design @ coeffs - colours) ** 2).sum(axis=1))
        inliers = off <= max(SPREAD_FLOOR, 3 * float(np.median(off[inliers])))
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = np.stack(_surface_terms(gy / height, gx / width), axis=-1)
    surface: Floats = (grid @ coeffs.astype(np.float32)).astype(np.float32)
    return surface


def texture_features(rgb: Rgb, smooth: bool) -> Floats:
    """Per pixel: its colour (CIELAB, lightly smoothed; on a smooth backdrop less the
    backdrop's colour there, so a gradient drops out), and the mean colour and spread of its
    neighbourhood, which tell a textured background (grass, gravel, fabric) from a subject."""
    lab = lab_colours(rgb, 0.1)
    if smooth:
        lab -= backdrop_surface(lab, frame_sides(rgb.shape) >= 0)
    radius = neighbourhood(rgb, smooth)
    fine = cv2.GaussianBlur(lab, (0, 0), max(0.7, max(rgb.shape[:2]) / 400))
    mean = cv2.GaussianBlur(lab, (0, 0), radius)
    variance = cv2.GaussianBlur(lab * lab, (0, 0), radius) - mean * mean
    features: Floats = np.concatenate([fine, mean, 4 * np.sqrt(np.maximum(variance, 0))],
                                      axis=2)
    return features


def clusters(samples: Floats, count: int) -> tuple[npt.NDArray[np.int32], Floats]:
    """k-means of the samples (seeded, so a picture always gives the same answer)."""
    samples = np.ascontiguousarray(samples, np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(1)
    _, labels, centres = cv2.kmeans(samples, min(count, len(samples)),
                                    np.zeros((len(samples), 1), np.int32), criteria, 1,
                                    cv2.KMEANS_PP_CENTERS)
    return np.asarray(labels, np.int32).ravel(), np.asarray(centres, np.float32)


def nearest(points: Floats, centres: Floats, radii: Floats | None = None) -> Floats:
    """Each point's distance to the nearest centre (in units of that centre's radius)."""
    best = np.full(len(points), np.inf, np.float32)
    for k, centre in enumerate(centres):
        gap = np.sqrt(((points - centre) ** 2).sum(axis=1))
        np.minimum(best, gap if radii is None else gap / radii[k], out=best)
    return best


def sample(values: Sampled, limit: int) -> Sampled:
    """At most about `limit` of the values, evenly spaced."""
    return cast("Sampled", values[:: max(1, len(values) // limit)])


def background_score(rgb: Rgb, smooth: bool) -> Floats:
    """How unlike the background each pixel is: its distance to the nearest cluster of the
    frame's features, in units of that cluster's spread (about 1 on the background).

    A cluster found on only one side of the frame is a subject cut by that edge (shoulders
    at the bottom of a portrait), not background, and is left out.
    """
    features = texture_features(rgb, smooth)
    height, width, depth = features.shape
    sides = frame_sides(rgb.shape)
    on_frame = sides >= 0
    points, side_of = sample(features[on_frame], 8000), sample(sides[on_frame], 8000)
    labels, centres = clusters(points, BACKGROUND_CLUSTERS)
    per_side = np.maximum(np.bincount(side_of, minlength=4), 1)
    kept, radii = [], []
    for k in range(len(centres)):
        member = labels == k
        shares = np.bincount(side_of[member], minlength=4) / per_side
        if member.any() and np.count_nonzero(shares >= SIDE_SHARE) >= 2:
            kept.append(k)
            gaps = np.sqrt(((points[member] - centres[k]) ** 2).sum(axis=1))
            radii.append(max(SPREAD_FLOOR, float(np.percentile(gaps, 75))))
    score = nearest(features.reshape(-1, depth), centres[kept], np.array(radii, np.float32))
    return score.reshape(height, width)


def disc(radius: int) -> npt.NDArray[np.uint8]:
    """A round structuring element of the given radius."""
    return np.asarray(cv2.getStructuringElement(cv2.MORPH_ELLIPSE,
                                                (2 * radius + 1, 2 * radius + 1)), np.uint8)


def rough_subject(rgb: Rgb, smooth: bool) -> Mask:
    """The pixels clearly unlike the background, without thin background lines (mortar,
    grass blades) and specks; its edge lies up to three neighbourhood radii too far out."""
    side = max(rgb.shape[:2])
    score = cv2.GaussianBlur(background_score(rgb, smooth), (0, 0), max(1.0, side / 400))
    opened = cv2.morphologyEx((score > UNLIKE).astype(np.uint8), cv2.MORPH_OPEN,
                              disc(max(1, round(side / 200)))) > 0
    if not keep_large(opened, MIN_SUBJECT).any():  # specks alone: a patterned floor's repeats
        return np.zeros_like(opened)
    return keep_large(opened)


def auto_mask(rgb: Rgb) -> Mask:
    """The rough subject with its edge placed by colour: near the edge, each pixel goes to
    the nearer of two colour models, the background's and the subject's."""
    smooth = smooth_backdrop(rgb)
    rough = rough_subject(rgb, smooth)
    radius = neighbourhood(rgb, smooth)
    side = max(rgb.shape[:2])
    reach = max(2, round(side / 40))
    inward = reach + round(3 * radius)  # past the rough edge's overshoot
    kept = rough.astype(np.uint8)
    inside = cv2.erode(kept, disc(inward)) > 0
    subject_sample = cv2.erode(kept, disc(reach)) > 0
    outside = cv2.dilate(kept, disc(reach)) == 0
    if not subject_sample.any() or not outside.any():
        return rough
    lab = lab_colours(rgb, EDGE_BLUR[0] if smooth else EDGE_BLUR[1])
    _, background = clusters(sample(lab[outside], 6000), COLOUR_CLUSTERS)
    subject_colours = sample(lab[subject_sample], 6000)
    subject_colours = subject_colours[nearest(subject_colours, background) > SAME_COLOUR]
    if len(subject_colours) < COLOUR_CLUSTERS:
        return rough
    _, subject = clusters(subject_colours, COLOUR_CLUSTERS)
    edge = ~inside & ~outside
    found = inside.copy()
    near = lab[edge]
    found[edge] = nearest(near, subject) < nearest(near, background)
    return keep_large(cv2.medianBlur(found.astype(np.uint8) * 255, 5) > 0)


def keep_large(mask: Mask, share: float = MIN_OBJECT) -> Mask:
    """The mask without specks: components under `share` of the picture are dropped."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    big: Mask = np.asarray(stats)[:, cv2.CC_STAT_AREA] >= share * mask.size
    big[0] = False
    return big[np.asarray(labels)]


def grabcut_mask(rgb: Rgb) -> Mask:
    """The subject of auto refined by GrabCut: well inside is subject, well outside background,
    a thin band inside its edge and a wide one outside are decided by GrabCut's colour models
    and smoothness (the wide one takes back what auto lost to a background of like colour)."""
    found = auto_mask(rgb)
    if found.all() or not found.any():  # GrabCut needs samples of both
        return found
    kept = found.astype(np.uint8)
    side = max(rgb.shape[:2])
    band = disc(max(1, round(side / 250)))
    mask = np.full(found.shape, cv2.GC_BGD, np.uint8)
    mask[cv2.dilate(kept, disc(max(1, round(side * GRABCUT_REACH)))) > 0] = cv2.GC_PR_BGD
    mask[found] = cv2.GC_PR_FGD
    mask[cv2.erode(kept, band) > 0] = cv2.GC_FGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), mask, (0, 0, 0, 0), bgd, fgd, GRABCUT_ROUNDS,
                cv2.GC_INIT_WITH_MASK)
    return keep_large((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD))


def watershed_mask(rgb: Rgb) -> Mask:
    """The regions of auto grown to the strongest edges by watershed from sure markers."""
    rough = auto_mask(rgb)
    kernel = np.ones((5, 5), np.uint8)
    markers = np.zeros(rgb.shape[:2], np.int32)
    markers[cv2.dilate(rough.astype(np.uint8), kernel, iterations=2) == 0] = 1
    markers[cv2.erode(rough.astype(np.uint8), kernel, iterations=2) > 0] = 2
    cv2.watershed(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), markers)
    found: Mask = (markers == 2) | ((markers == -1) & rough)  # -1: the dividing lines
    return found


METHODS = {"auto": auto_mask, "grabcut": grabcut_mask, "watershed": watershed_mask}


def subject_alpha(rgb: Rgb, method: str, feather: float,
                  matting: bool = False) -> npt.NDArray[np.uint8]:
    """The alpha (0-255) of the subject of the full-size picture `rgb`."""
    small = working_copy(rgb, WORK_SIDE)
    if float(small.reshape(-1, 3).std(axis=0).max()) < FLAT:
        raise InputError("remove_background found nothing to cut out: the picture is one colour",
                         stage="process")
    mask = METHODS[method](small)
    if not mask.any():
        raise InputError("remove_background found no subject that stands out from the "
                         "background", stage="process")
    if matting:
        return matted_alpha(rgb, mask)
    height, width = rgb.shape[:2]
    alpha = np.asarray(np.where(scaled(mask, (width, height)) >= 0.5, 255, 0), np.uint8)
    return np.asarray(cv2.GaussianBlur(alpha, (0, 0), feather), np.uint8) if feather > 0 else alpha


def scaled(mask: Mask, size: tuple[int, int]) -> Floats:
    """The mask (0-1) at `size`, area-averaged down or smoothly up (cut at half, it follows
    the subject, not the grid)."""
    shrink = size[0] < mask.shape[1]
    return np.asarray(cv2.resize(mask.astype(np.float32), size, interpolation=cv2.INTER_AREA
                                 if shrink else cv2.INTER_LINEAR), np.float32)


def trimap(mask: Mask, band: int) -> Matte:
    """1 well inside the mask, 0 well outside, 0.5 (unknown) within `band` pixels of its edge.

    Where the subject (or the background) is narrower than the band, its middle stays sure.
    """
    inside = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    outside = cv2.distanceTransform((~mask).astype(np.uint8), cv2.DIST_L2, 3)
    known = np.full(mask.shape, 0.5)
    known[inside > min(band, float(inside.max()) / 2)] = 1
    known[outside > min(band, float(outside.max()) / 2)] = 0
    return known


def matted_alpha(rgb: Rgb, mask: Mask) -> npt.NDArray[np.uint8]:
    """The alpha (0-255) of the full-size picture by closed-form matting along the mask's edge."""
    small = working_copy(rgb, MATTE_SIDE)
    height, width = small.shape[:2]
    sure = scaled(mask, (width, height)) >= 0.5
    known = trimap(sure, max(2, round(MATTE_BAND * max(height, width))))
    alpha: Matte = sure.astype(np.float64)
    # Smaller than a matting window, or no edge to estimate: the hard cut is the answer.
    if min(height, width) > 2 * MATTE_RADIUS and all((known == v).any() for v in (0, 0.5, 1)):
        alpha = closed_form_matte(small.astype(np.float64) / 255, known)
    if small.shape == rgb.shape:
        return np.asarray(alpha * 255 + 0.5, np.uint8)
    return guided_upsampling(small, alpha, rgb)


class GuidedFilter:
    """He, Sun and Tang's guided filter with a colour guide: per window, values as an affine
    function of the colours; at each pixel, the average of its windows' fits."""

    def __init__(self, guide: Matte, radius: int, epsilon: float) -> None:
        self.size = (2 * radius + 1,) * 2
        planes = [np.ascontiguousarray(guide[..., k], np.float64) for k in range(3)]
        means = [self.box(channel) for channel in planes]
        c = {(i, j): self.box(planes[i] * planes[j]) - means[i] * means[j]
             + (epsilon if i == j else 0.0) for i in range(3) for j in range(i, 3)}
        # Each window's colour covariance inverted by its cofactors (it is symmetric).
        cofactors = [c[1, 1] * c[2, 2] - c[1, 2] ** 2, c[0, 2] * c[1, 2] - c[0, 1] * c[2, 2],
                     c[0, 1] * c[1, 2] - c[0, 2] * c[1, 1], c[0, 0] * c[2, 2] - c[0, 2] ** 2,
                     c[0, 1] * c[0, 2] - c[0, 0] * c[1, 2], c[0, 0] * c[1, 1] - c[0, 1] ** 2]
        det = c[0, 0] * cofactors[0] + c[0, 1] * cofactors[1] + c[0, 2] * cofactors[2]
        m00, m01, m02, m11, m12, m22 = (term / det for term in cofactors)
        # Found in double precision (the covariances are small differences), applied in
        # single: several times faster, and the matte is the same to a thousandth.
        self.guide = [plane.astype(np.float32) for plane in planes]
        self.mean = [mean.astype(np.float32) for mean in means]
        self.inverse = tuple(tuple(m.astype(np.float32) for m in row)
                             for row in ((m00, m01, m02), (m01, m11, m12), (m02, m12, m22)))

    def box(self, values: Matte) -> Matte:
        """The mean of `values` over the window around each pixel."""
        return np.asarray(cv2.blur(values, self.size, borderType=cv2.BORDER_REFLECT))

    def models(self, values: Matte) -> list[Matte]:
        """Each pixel's averaged model: the slopes on the three colour channels, the offset."""
        mean_value = self.box(values)
        covariance = [self.box(channel * values) - mean * mean_value
                      for channel, mean in zip(self.guide, self.mean, strict=True)]
        slopes = [row[0] * covariance[0] + row[1] * covariance[1] + row[2] * covariance[2]
                  for row in self.inverse]
        offset = mean_value - sum((s * m for s, m in zip(slopes, self.mean, strict=True)),
                                  start=np.zeros_like(mean_value))
        return [self.box(plane) for plane in (*slopes, offset)]

    def __call__(self, values: Matte) -> Matte:
        """The values filtered: each pixel's model applied to its own colour."""
        *slopes, offset = self.models(values)
        return sum((s * g for s, g in zip(slopes, self.guide, strict=True)), start=offset)


def closed_form_matte(colours: Matte, known: Matte) -> Matte:
    """Closed-form matting (Levin, Lischinski and Weiss) of the unknown (0.5) pixels of `known`.

    The matting Laplacian is never built: applied to values it is the values less their
    guided filter, as in He, Sun and Tang's large-kernel matting, and conjugate gradients
    solve for the unknown pixels with the known ones held.
    """
    smooth = GuidedFilter(colours, MATTE_RADIUS, MATTE_EPSILON)
    unknown = (known == 0.5).astype(np.float32)
    held = (known * (1 - unknown)).astype(np.float32)

    def laplacian(values: Matte) -> Matte:
        applied: Matte = (values - smooth(values)) * unknown
        return applied

    found = 0.5 * unknown
    residual = -laplacian(held + found)
    direction, size = residual, float(np.vdot(residual, residual))
    goal = MATTE_TOLERANCE ** 2 * float(np.vdot(*(laplacian(held),) * 2))
    for _ in range(MATTE_ROUNDS):
        if size <= goal:
            break
        pushed = laplacian(direction)
        curvature = float(np.vdot(direction, pushed))
        if curvature <= 0:  # no direction left that lowers the error (a flat unknown region)
            break
        step = size / curvature
        found = found + step * direction
        residual = residual - step * pushed
        size, previous = float(np.vdot(residual, residual)), size
        direction = residual + size / previous * direction
    matte: Matte = np.clip(held + found, 0, 1)
    return matte


def guided_upsampling(small: Rgb, alpha: Matte, rgb: Rgb) -> npt.NDArray[np.uint8]:
    """`alpha` (0-1, of the copy `small`) as 0-255 at the size of `rgb`, following its detail.

    The guided filter's models are scaled up and applied to the full-size colours, only near
    the edge: elsewhere the alpha is 0 or 1 and the models say exactly that.
    """
    height, width = rgb.shape[:2]
    # Within half a level of 0 or 1 is 0 or 1: there the models need not be applied.
    alpha = np.where(alpha < 0.5 / 255, 0.0, np.where(alpha > 1 - 0.5 / 255, 1.0, alpha))
    models = np.dstack(GuidedFilter(small / 255, GUIDE_RADIUS, GUIDE_EPSILON).models(alpha))
    models = models.astype(np.float32)

    def upscaled(values: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return np.asarray(cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST),
                          np.uint8)

    # The models of two box filters, sampled bilinearly, reach this far past the soft alpha.
    reach = 2 * GUIDE_RADIUS + 1
    soft = ((alpha > 0) & (alpha < 1)).astype(np.uint8)
    near_edge = np.asarray(cv2.dilate(soft, disc(reach + 1)), np.uint8)
    out = upscaled(np.asarray(np.where(alpha >= 0.5, 255, 0), np.uint8))
    ys, xs = np.nonzero(upscaled(near_edge))
    if not len(ys):
        return out
    scale_y, scale_x = alpha.shape[0] / height, alpha.shape[1] / width
    # cv2.remap takes maps of under 32767 on a side: the pixels go in rows of 1024.
    rows = -(-len(ys) // 1024)

    def grid(index: npt.NDArray[np.intp], scale: float) -> Floats:
        at = ((index + 0.5) * scale - 0.5).astype(np.float32)
        return np.resize(at, rows * 1024).reshape(rows, 1024)

    sampled = cv2.remap(models, grid(xs, scale_x), grid(ys, scale_y), cv2.INTER_LINEAR,
                        borderMode=cv2.BORDER_REPLICATE).reshape(-1, 4)[:len(ys)]
    colours = rgb[ys, xs].astype(np.float32) / 255
    values = (sampled[:, :3] * colours).sum(axis=1) + sampled[:, 3]
    out[ys, xs] = np.clip(values * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


@operation("remove_background", BackgroundParams, inline=parse_background,
           inline_form="remove_background=METHOD,FEATHER,COLOUR[,matting] "
           "(remove_background=grabcut,matting)")
def remove_background(canvas: Canvas, p: BackgroundParams) -> Canvas:
    """Cut the subject out: auto (edges), grabcut or watershed; transparent or on a colour."""
    image = flatten(canvas.image).convert("RGB")
    alpha = subject_alpha(np.asarray(image), p.method, p.feather, p.matting)
    cut = image.convert("RGBA")
    cut.putalpha(Image.fromarray(alpha))
    kept = canvas.with_notes(remove_background={
        "method": p.method, "matting": p.matting,
        "subject_share": round(float(np.count_nonzero(alpha >= 128)) / alpha.size, 4),
    })
    if p.background[3] < 255:
        return kept.with_image(cut)
    return kept.with_image(flatten(cut, p.background[:3]))
