"""`remove_background`: cut the subject out, onto transparency or a chosen colour.

Three methods, all working on a copy of at most `WORK_SIDE` pixels on its long
side (a 12-megapixel photo takes well under a second); the mask is then scaled
back up smoothly, feathered if asked, and applied to the full-size image:
- auto: Canny edges split the picture into regions, and each region is subject or
  background by how far its colour is from the background, modelled as a smooth
  surface fitted robustly to a frame along the border (so gradients work as well
  as plain backdrops, and the hole of an O is background). Regions touching the
  border must differ twice as much to count as subject (shoulders cut off by the
  bottom edge do);
- grabcut: OpenCV's GrabCut, started from the same background model (the frame is
  background where it matches it); best on textured backgrounds;
- watershed: the regions of auto, grown back to the strongest edges by OpenCV's
  watershed from markers well inside the subject and the background.

`matting: true` (inline `remove_background=METHOD,matting`) gives soft edges to hair
and fur: the mask becomes a trimap (sure subject well inside, sure background well
outside, unknown in a band along the edge whose width is a share of the picture's
size), and closed-form matting (pymatting) estimates the alpha in the band on a copy
of at most `MATTE_SIDE` pixels. The alpha is brought back to full size through a
guided filter's coefficients, so the fine edge follows the full-size picture; a
12-megapixel photo still takes well under three seconds. The matte replaces the
feather; the sidecar notes say whether the alpha was matted.
"""

from __future__ import annotations

from typing import Any, Literal

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
GRABCUT_SIDE = 400  # GrabCut is slower: it works smaller still
GRABCUT_ROUNDS = 4
FRAME = 0.03  # share of each side treated as the frame around the subject
CANNY = (20, 50)
MIN_OBJECT = 0.001  # regions smaller than this share of the picture are dropped
BACKGROUND_DISTANCE = 18.0  # colour distance (0-441) under which a region is background
FLAT = 2.0  # standard deviation under which a picture is one colour
MATTE_SIDE = 400  # pixels on the long side of the copy that matting solves on
MATTE_BAND = 0.04  # unknown band either side of the edge, as a share of the long side
MATTE_WINDOW = 3  # closed-form matting looks at 3x3 windows: smaller pictures get a hard cut
GUIDE_RADIUS = 1  # guided filter bringing the matte to full size: window radius (small copy)
GUIDE_EPSILON = 1e-4  # and its regularisation (colours 0-1): lower follows finer detail


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


def frame_mask(shape: tuple[int, ...], share: float = FRAME) -> Mask:
    """True on a frame `share` of the size wide along the four borders."""
    height, width = shape[:2]
    band = max(1, round(share * min(height, width)))
    frame = np.zeros((height, width), bool)
    frame[:band], frame[-band:], frame[:, :band], frame[:, -band:] = True, True, True, True
    return frame


Floats = npt.NDArray[np.float32]
Matte = npt.NDArray[np.floating[Any]]  # alpha, 0-1


def _surface_terms(y: Floats, x: Floats) -> list[Floats]:
    """The terms of a quadratic surface in x and y (fractions of the picture's size)."""
    return [np.ones_like(x), x, y, x * x, x * y, y * y]


def background_model(rgb: Rgb, where: Mask) -> Floats:
    """The background colour at every pixel: a quadratic surface fitted to the pixels `where`.

    The fit is repeated on the pixels close to it, so a subject that reaches the
    border (shoulders at the bottom of a portrait) does not pull it off.
    """
    height, width = rgb.shape[:2]
    ys, xs = np.nonzero(where)
    step = max(1, len(ys) // 20000)  # a sample is plenty for six coefficients
    ys, xs = ys[::step], xs[::step]
    design = np.stack(_surface_terms(ys.astype(np.float32) / height,
                                     xs.astype(np.float32) / width), axis=1)
    colours = rgb[ys, xs].astype(np.float32)
    # Start from the half nearest the median colour, then refit on the pixels near the fit.
    off = np.sqrt(((colours - np.median(colours, axis=0)) ** 2).sum(axis=1))
    inliers = off <= np.median(off)
    for _ in range(4):
        coeffs, *_ = np.linalg.lstsq(design[inliers], colours[inliers], rcond=None)
        off = np.sqrt(((design @ coeffs - colours) ** 2).sum(axis=1))
        inliers = off <= max(BACKGROUND_DISTANCE, 3 * float(np.median(off[inliers])))
    gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
    grid = np.stack(_surface_terms(gy / height, gx / width), axis=-1)
    surface: Floats = (grid @ coeffs.astype(np.float32)).astype(np.float32)
    return surface


def distance(rgb: Rgb, model: Floats) -> Floats:
    """Euclidean colour distance of each pixel from the background model."""
    squares: Floats = ((rgb.astype(np.float32) - model) ** 2).sum(axis=2)
    return np.sqrt(squares)


def edge_regions(rgb: Rgb) -> tuple[Mask, npt.NDArray[np.int32], int]:
    """Canny edges (slightly thickened) and the labelled regions between them."""
    grey = cv2.cvtColor(cv2.GaussianBlur(rgb, (5, 5), 0), cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, *CANNY) > 0
    colour_edges = np.zeros_like(edges)
    for channel in cv2.split(cv2.GaussianBlur(rgb, (5, 5), 0)):
        colour_edges |= cv2.Canny(channel, *CANNY) > 0
    edges = cv2.dilate((edges | colour_edges).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    count, labels = cv2.connectedComponents((~edges).astype(np.uint8), connectivity=4)
    return edges, np.asarray(labels, np.int32), count


def auto_mask(rgb: Rgb) -> Mask:
    """The subject found by edges and contours, with background-coloured holes left out."""
    edges, labels, count = edge_regions(rgb)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    far = distance(rgb, background_model(rgb, frame_mask(rgb.shape)))
    # Mean distance from the background for every region between edges.
    sums = np.bincount(labels.ravel(), weights=far.ravel(), minlength=count)
    sizes = np.bincount(labels.ravel(), minlength=count)
    region_far = sums / np.maximum(sizes, 1)
    subject_region = region_far > BACKGROUND_DISTANCE
    # Regions at the border are background unless clearly unlike it (a subject cut off there).
    subject_region[border] &= region_far[border] > 2 * BACKGROUND_DISTANCE
    subject_region[0] = False  # label 0: the edges themselves, decided below
    subject = subject_region[labels]
    # An edge pixel is subject when it is far from the background colour and, next to the
    # background, at least half as far as its neighbours: anti-aliased borders split at 50%.
    window = np.ones((5, 5), np.uint8)
    near_background = cv2.dilate((~subject & ~edges).astype(np.uint8), window) > 0
    half_way = far >= 0.5 * cv2.dilate(far, window)
    subject |= edges & (far > BACKGROUND_DISTANCE) & (half_way | ~near_background)
    return keep_large(subject)


def keep_large(mask: Mask) -> Mask:
    """The mask without specks: components under MIN_OBJECT of the picture are dropped."""
    _, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    big: Mask = np.asarray(stats)[:, cv2.CC_STAT_AREA] >= MIN_OBJECT * mask.size
    big[0] = False
    return big[np.asarray(labels)]


def grabcut_mask(rgb: Rgb) -> Mask:
    """The subject found by GrabCut; the frame is background, colours unlike it probably not."""
    frame = frame_mask(rgb.shape)
    far = distance(rgb, background_model(rgb, frame)) > BACKGROUND_DISTANCE
    mask = np.where(far, cv2.GC_PR_FGD, cv2.GC_PR_BGD).astype(np.uint8)
    mask[frame & ~far] = cv2.GC_BGD
    if not (mask == cv2.GC_PR_FGD).any():
        return np.zeros(rgb.shape[:2], bool)
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


METHODS = {"auto": (auto_mask, WORK_SIDE), "grabcut": (grabcut_mask, GRABCUT_SIDE),
           "watershed": (watershed_mask, WORK_SIDE)}


def subject_alpha(rgb: Rgb, method: str, feather: float,
                  matting: bool = False) -> npt.NDArray[np.uint8]:
    """The alpha (0-255) of the subject of the full-size picture `rgb`."""
    find, side = METHODS[method]
    small = working_copy(rgb, side)
    if float(small.reshape(-1, 3).std(axis=0).max()) < FLAT:
        raise InputError("remove_background found nothing to cut out: the picture is one colour",
                         stage="process")
    mask = find(small)
    if not mask.any():
        raise InputError("remove_background found no subject that stands out from the "
                         "background", stage="process")
    if matting:
        return matted_alpha(rgb, mask)
    height, width = rgb.shape[:2]
    alpha = np.asarray(np.where(scaled(mask, (width, height)) >= 0.5, 255, 0), np.uint8)
    return np.asarray(cv2.GaussianBlur(alpha, (0, 0), feather), np.uint8) if feather > 0 else alpha


def scaled(mask: Mask, size: tuple[int, int]) -> Floats:
    """The mask (0-1) at `size`: area-averaged down, or smoothly up, so that cut at half way
    its edge follows the subject, not the grid."""
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
    # Too small for a matting window, or no edge to estimate: the hard cut is the answer.
    if min(height, width) >= MATTE_WINDOW and all((known == v).any() for v in (0, 0.5, 1)):
        from pymatting import estimate_alpha_cf  # noqa: PLC0415  (0.5 s to import: only when matting)
        alpha = np.clip(estimate_alpha_cf(small.astype(np.float64) / 255, known), 0, 1)
    if small.shape == rgb.shape:
        return np.asarray(alpha * 255 + 0.5, np.uint8)
    return guided_upsampling(small, alpha, rgb)


def guided_coefficients(small: Rgb, alpha: Matte) -> Floats:
    """The local linear colour models (slope per channel, offset) of a guided filter that
    turns the colours of `small` into `alpha`, averaged over their windows: (h, w, 4)."""
    def box(values: Matte) -> Floats:
        size = (2 * GUIDE_RADIUS + 1,) * 2
        return np.asarray(cv2.boxFilter(values, -1, size, borderType=cv2.BORDER_REFLECT),
                          np.float32)

    colours = small.astype(np.float32) / 255
    target = alpha.astype(np.float32)
    mean_colour, mean_alpha = box(colours), box(target)
    covariance = box(colours * target[..., None]) - mean_colour * mean_alpha[..., None]
    variance = np.empty((*target.shape, 3, 3), np.float32)
    for i in range(3):
        for j in range(i, 3):
            variance[..., i, j] = variance[..., j, i] = (
                box(colours[..., i] * colours[..., j]) - mean_colour[..., i] * mean_colour[..., j])
    variance += GUIDE_EPSILON * np.eye(3, dtype=np.float32)
    slope = np.linalg.solve(variance, covariance[..., None])[..., 0]
    offset = mean_alpha - (slope * mean_colour).sum(axis=2)
    return box(np.dstack([slope, offset]))


def guided_upsampling(small: Rgb, alpha: Matte, rgb: Rgb) -> npt.NDArray[np.uint8]:
    """`alpha` (0-1, of the copy `small`) as 0-255 at the size of `rgb`, following its detail.

    The guided filter's models are scaled up and applied to the full-size colours, only near
    the edge: elsewhere the alpha is 0 or 1 and the models say exactly that.
    """
    height, width = rgb.shape[:2]
    models = guided_coefficients(small, alpha)

    def upscaled(values: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint8]:
        return np.asarray(cv2.resize(values, (width, height), interpolation=cv2.INTER_NEAREST),
                          np.uint8)

    # Two box filters and the bilinear step reach 3 pixels of the copy past the soft alpha.
    soft = ((alpha > 0) & (alpha < 1)).astype(np.uint8)
    near_edge = np.asarray(cv2.dilate(soft, np.ones((9, 9), np.uint8)), np.uint8)
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
