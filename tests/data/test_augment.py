"""Batch augmentation against its definitions (lecture: "Data Augmentation").

- mixup (Zhang et al. 2018): x^ = lam x_i + (1 - lam) x_j and y^ = lam y_i + (1 - lam) y_j with
  one-hot labels, lam ~ Beta(alpha, alpha); lam and the pairing j are recovered from the labels.
- cutout (DeVries & Taylor 2017): exactly one size x size square, clipped at the border, is zeroed.
- random crop with zero padding (He et al. 2016): a translation by (dy, dx) in [-p, p]^2, found by
  brute force for every sample.
- cutmix (Yun et al. 2019): the pasted box's area equals the label weight of the pasted image.
"""

import pytest
import torch
import torch.nn.functional as F

from cnnkit.data.augment import cutmix, cutout, mixup, random_crop, random_flip


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _positive_batch(n: int, c: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    # strictly positive pixels, so a zeroed (cutout) or zero-filled (crop) pixel is unambiguous
    return torch.rand(n, c, h, w, generator=_gen(seed)) + 0.5


def _shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Reference translation with zero fill, written pixel-range by pixel-range: out[r, c] = img[r + dy, c + dx]."""
    _, h, w = img.shape
    out = torch.zeros_like(img)
    r0, r1 = max(0, -dy), min(h, h - dy)
    c0, c1 = max(0, -dx), min(w, w - dx)
    if r0 < r1 and c0 < c1:
        out[:, r0:r1, c0:c1] = img[:, r0 + dy : r1 + dy, c0 + dx : c1 + dx]
    return out


# ---------------------------------------------------------------- random crop = translation


@pytest.mark.parametrize("padding", [1, 2])
def test_random_crop_is_a_per_sample_translation(padding: int) -> None:
    x = _positive_batch(256, 2, 7, 9)
    out = random_crop(x, padding, _gen(1))
    assert out.shape == x.shape
    shifts = []
    for n in range(x.shape[0]):
        found = [
            (dy, dx)
            for dy in range(-padding, padding + 1)
            for dx in range(-padding, padding + 1)
            if torch.equal(out[n], _shift(x[n], dy, dx))
        ]
        assert len(found) == 1, f"sample {n} is not a unique translation of its input: {found}"
        shifts.append(found[0])
    # per-sample randomness: every shift in [-p, p]^2 occurs, not one shift for the whole batch
    assert set(shifts) == {(a, b) for a in range(-padding, padding + 1) for b in range(-padding, padding + 1)}


def test_random_crop_zero_padding_is_identity() -> None:
    x = _positive_batch(4, 1, 5, 5)
    assert torch.equal(random_crop(x, 0, _gen(0)), x)


# ---------------------------------------------------------------- flip


def test_random_flip_per_sample() -> None:
    x = _positive_batch(1000, 1, 3, 4)
    out = random_flip(x, _gen(2), p=0.3)
    flipped = torch.tensor([torch.equal(out[n], x[n].flip(-1)) for n in range(len(x))])
    kept = torch.tensor([torch.equal(out[n], x[n]) for n in range(len(x))])
    assert bool((flipped ^ kept).all()), "every sample must be either its input or its mirror image"
    assert 0.25 < flipped.float().mean().item() < 0.35  # ~Binomial(1000, 0.3): 0.3 +- 5 sigma
    assert torch.equal(random_flip(x, _gen(2), p=0.0), x)
    assert torch.equal(random_flip(x, _gen(2), p=1.0), x.flip(-1))


# ---------------------------------------------------------------- cutout


def _square(h: int, w: int, cy: int, cx: int, size: int) -> torch.Tensor:
    m = torch.zeros(h, w, dtype=torch.bool)
    top, left = cy - size // 2, cx - size // 2
    m[max(top, 0) : max(top + size, 0), max(left, 0) : max(left + size, 0)] = True
    return m


@pytest.mark.parametrize("size", [3, 4])
def test_cutout_zeroes_one_clipped_square_per_sample(size: int) -> None:
    n, c, h, w = 64, 3, 8, 10
    x = _positive_batch(n, c, h, w)
    out = cutout(x, size, _gen(3))
    areas, masks = [], []
    for i in range(n):
        zero = out[i] == 0
        assert torch.equal(zero, zero[:1].expand_as(zero)), "the hole must be the same in every channel"
        hole = zero[0]
        assert torch.equal(out[i][:, ~hole], x[i][:, ~hole]), "pixels outside the hole must be unchanged"
        # brute force: the hole is the size x size square at some centre in the image, clipped at the border
        assert any(torch.equal(hole, _square(h, w, cy, cx, size)) for cy in range(h) for cx in range(w)), (
            f"sample {i}: zeroed pixels do not form one clipped {size}x{size} square"
        )
        areas.append(int(hole.sum()))
        masks.append(hole)
    assert max(areas) == size * size  # an interior square keeps its full area
    assert min(areas) < size * size  # and some are clipped at the border
    assert len({tuple(m.flatten().tolist()) for m in masks}) > n // 4, "holes must be drawn per sample"


def test_cutout_leaves_input_untouched() -> None:
    x = _positive_batch(4, 1, 6, 6)
    before = x.clone()
    cutout(x, 3, _gen(0))
    assert torch.equal(x, before)


# ---------------------------------------------------------------- mixup


def test_mixup_is_the_convex_combination_of_images_and_one_hot_labels() -> None:
    n, k = 8, 10
    x = _positive_batch(n, 2, 5, 5)
    labels = torch.arange(n)  # distinct classes, so the label row names the partner j
    y = F.one_hot(labels, k).float()
    checked = 0
    for seed in range(6):
        out_x, out_y, lam = mixup(x, y, alpha=1.0, generator=_gen(seed))
        assert 0.0 <= lam <= 1.0
        assert torch.allclose(out_y.sum(1), torch.ones(n))
        if not 0.05 < lam < 0.95:
            continue
        partners = []
        for i in range(n):
            nz = out_y[i].nonzero().flatten().tolist()
            if nz == [i]:  # paired with itself
                j, lam_i = i, None
            else:
                assert len(nz) == 2 and i in nz, f"row {i} must mix its own class with one other: {out_y[i]}"
                j = next(c for c in nz if c != i)
                lam_i = out_y[i, i].item()
                assert out_y[i, j].item() == pytest.approx(1 - lam_i, abs=1e-6)
                assert lam_i == pytest.approx(lam, abs=1e-6), "one lam per batch, as returned"
            partners.append(j)
            expected = lam * x[i] + (1 - lam) * x[j]
            assert torch.allclose(out_x[i], expected, rtol=0, atol=1e-6), (
                f"image {i} is not lam x_i + (1-lam) x_j"
            )
        assert sorted(partners) == list(range(n)), "the partners must be a permutation of the batch"
        checked += 1
    assert checked >= 3


def test_mixup_lambda_follows_beta_alpha_alpha() -> None:
    x = torch.ones(2, 1, 1, 1)
    y = F.one_hot(torch.arange(2), 2).float()
    g = _gen(7)
    for alpha in (0.4, 1.0):
        lams = torch.tensor([mixup(x, y, alpha, g)[2] for _ in range(1500)], dtype=torch.float64)
        var = 1 / (4 * (2 * alpha + 1))  # variance of Beta(a, a)
        assert lams.mean().item() == pytest.approx(0.5, abs=0.05)
        assert lams.var().item() == pytest.approx(var, abs=0.025)


# ---------------------------------------------------------------- cutmix


def test_cutmix_box_area_matches_label_weights() -> None:
    n, k, h, w = 6, 6, 9, 11
    labels = torch.arange(n)
    x = (labels.float() + 1).view(n, 1, 1, 1).expand(n, 2, h, w).contiguous()  # image i is the constant i+1
    y = F.one_hot(labels, k).float()
    boxes = 0
    for seed in range(10):
        out_x, out_y, lam = cutmix(x, y, alpha=1.0, generator=_gen(seed))
        box = None
        for i in range(n):
            pasted = out_x[i, 0] != x[i, 0]
            if not pasted.any():
                assert torch.equal(out_y[i], y[i]) or lam == pytest.approx(1.0)
                continue
            rows, cols = pasted.any(1).nonzero().flatten(), pasted.any(0).nonzero().flatten()
            rect = torch.zeros_like(pasted)
            rect[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1] = True
            assert torch.equal(pasted, rect), "the pasted region must be one axis-aligned box"
            assert box is None or torch.equal(box, pasted), "one box per batch"
            box = pasted
            j = int(out_x[i, 0][pasted][0].item()) - 1  # the partner, read from the pasted pixels
            assert torch.all(out_x[i][:, pasted] == j + 1)
            area = pasted.sum().item() / (h * w)
            assert lam == pytest.approx(1 - area, abs=1e-9)
            expected_y = (1 - area) * y[i] + area * y[j]
            assert torch.allclose(out_y[i], expected_y, atol=1e-6), "label weight must equal the box area"
        boxes += box is not None
    assert boxes >= 5


# ---------------------------------------------------------------- seeding and arguments


def test_seeded_generator_gives_identical_output() -> None:
    x = _positive_batch(16, 3, 8, 8)
    y = F.one_hot(torch.arange(16) % 10, 10).float()
    fns = [
        lambda g: random_crop(x, 2, g),
        lambda g: random_flip(x, g),
        lambda g: cutout(x, 3, g),
        lambda g: mixup(x, y, 0.5, g)[0],
        lambda g: cutmix(x, y, 1.0, g)[0],
    ]
    for fn in fns:
        assert torch.equal(fn(_gen(5)), fn(_gen(5)))
        assert not torch.equal(fn(_gen(5)), fn(_gen(6)))


def test_bad_arguments_raise_value_error() -> None:
    x = torch.rand(2, 1, 4, 4)
    y = F.one_hot(torch.arange(2), 3).float()
    bad = [
        lambda: random_crop(x, -1),
        lambda: random_crop(x[0], 1),  # not a batch
        lambda: random_flip(x, p=1.5),
        lambda: random_flip(x, p=-0.1),
        lambda: cutout(x, -2),
        lambda: mixup(x, y, 0.0),
        lambda: mixup(x, y, -1.0),
        lambda: mixup(x, torch.arange(2), 1.0),  # integer labels, not one-hot
        lambda: mixup(x, y[:1], 1.0),  # batch size mismatch
        lambda: cutmix(x, y, 0.0),
        lambda: cutmix(x, torch.arange(2), 1.0),
    ]
    for i, fn in enumerate(bad):
        with pytest.raises(ValueError):
            fn()
            pytest.fail(f"case {i} did not raise")


# ---------------------------------------------------------------- test-time views


def test_translate_moves_every_pixel_by_the_shift_and_repeats_the_edge() -> None:
    from cnnkit.data.augment import translate

    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).view(2, 3, 5, 6)
    for dy, dx in ((1, 1), (-1, -1), (2, -1), (0, 3)):
        y = translate(x, dy, dx)
        assert y.shape == x.shape
        for i in range(5):
            for j in range(6):
                # x'[i, j] = x[i - dy, j - dx], the source clamped to the image (replicate padding)
                si, sj = min(max(i - dy, 0), 4), min(max(j - dx, 0), 5)
                assert torch.equal(y[..., i, j], x[..., si, sj])
    assert translate(x, 0, 0) is x


def test_tta_views_are_airbenchs_weighted_mirror_and_diagonal_shifts() -> None:
    from cnnkit.data.augment import translate, tta_views

    x = torch.randn(4, 1, 8, 8)
    assert [w for w, _ in tta_views(x, flip=False)] == [1.0]
    flip_only = tta_views(x, flip=True)
    assert [w for w, _ in flip_only] == [0.5, 0.5] and torch.equal(flip_only[1][1], x.flip(3))
    views = tta_views(x, flip=True, shift=1)
    assert len(views) == 6 and abs(sum(w for w, _ in views) - 1) < 1e-12
    assert [w for w, _ in views] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    expected = [x, x.flip(3), translate(x, 1, 1), translate(x, -1, -1)]
    expected += [translate(x.flip(3), 1, 1), translate(x.flip(3), -1, -1)]
    got = [v for _, v in views]
    assert all(any(torch.equal(g, e) for g in got) for e in expected)
    with pytest.raises(ValueError, match="shift must be >= 0"):
        tta_views(x, flip=False, shift=-1)


def test_evaluate_with_tta_averages_the_views_logits() -> None:
    """For a linear model, the weighted mean of the views' logits is the model of the weighted mean view."""
    from cnnkit.data.augment import tta_views
    from cnnkit.train.loop import evaluate

    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 5))
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    x = (images.float() / 255 - 0.5) / 0.25
    averaged = sum(w * v for w, v in tta_views(x, flip=True, shift=1))
    with torch.no_grad():
        labels = model(averaged).argmax(1)
        plain_labels = model(x).argmax(1)
    got = evaluate(model, images, labels, mean, std, tta=True, tta_shift=1)
    assert got["top1"] == 1.0
    assert evaluate(model, images, plain_labels, mean, std)["top1"] == 1.0
    assert (labels != plain_labels).any()  # the views change some answers: the check can fail
