import pytest

from deit.data import DataConfig, parse_rand_augment


def test_defaults_are_the_deit_recipe():
    c = DataConfig()
    assert c.scale == (0.08, 1.0) and c.ratio == pytest.approx((3 / 4, 4 / 3))
    assert (c.hflip, c.train_interpolation, c.auto_augment) == (0.5, "bicubic", "rand-m9-mstd0.5-inc1")
    assert (c.reprob, c.remode, c.recount) == (0.25, "pixel", 1)
    assert (c.mixup, c.cutmix, c.mixup_prob, c.mixup_switch_prob, c.smoothing) == (0.8, 1.0, 1.0, 0.5, 0.1)
    assert (c.repeated_aug, c.num_repeats, c.on_bad_image) == (True, 3, "skip")
    assert c.mixup_active


@pytest.mark.parametrize("kw, words", [
    (dict(dataset="imagenet"), "dataset must be one of"),
    (dict(dataset="imagefolder"), "give its root"),
    (dict(scale=(0.5, 0.1)), "low <= high"),
    (dict(scale=(0.0, 1.0)), "0 < low"),
    (dict(hflip=1.5), "hflip is a probability"),
    (dict(reprob=-0.1), "reprob is a probability"),
    (dict(remode="noise"), "remode must be one of"),
    (dict(on_bad_image="ignore"), "on_bad_image must be one of"),
    (dict(auto_augment="rand-m9-zz3"), "unknown section"),
    (dict(auto_augment="rand-m9-x"), "cannot read section"),
    (dict(auto_augment="autoaug-m9"), "only RandAugment"),
    (dict(batch_size=7), "batch_size must be even"),
    (dict(batch_size=0), "batch_size must be an integer >= 1"),
    (dict(num_workers=-1), "num_workers"),
    (dict(val_fraction=1.0), "val_fraction"),
    (dict(train_per_class=0), "train_per_class"),
    (dict(smoothing=1.0), "smoothing"),
    (dict(train_interpolation="lanczos"), "train_interpolation"),
])
def test_bad_values_are_named(kw, words):
    with pytest.raises(ValueError, match=words):
        DataConfig(**kw)


def test_odd_batch_is_fine_without_mixup_and_round_trip():
    c = DataConfig(batch_size=7, mixup=0, cutmix=0, auto_augment="none", scale=[0.2, 0.9])
    assert c.auto_augment is None and not c.mixup_active and c.scale == (0.2, 0.9)
    assert DataConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="unknown data setting"):
        DataConfig.from_dict({"mixupp": 0.5})


def test_parse_rand_augment():
    s = parse_rand_augment("rand-m9-mstd0.5-inc1")
    assert (s.magnitude, s.num_ops, s.magnitude_std, s.magnitude_max, s.increasing, s.prob) == (9, 2, 0.5, 10, True,
                                                                                               0.5)
    s = parse_rand_augment("rand-n3-m7-mmax12-p1.0-inc0-mstd101")
    assert (s.num_ops, s.magnitude, s.magnitude_max, s.prob, s.increasing) == (3, 7, 12, 1.0, False)
    assert s.magnitude_std == float("inf")
    assert "PosterizeIncreasing" in parse_rand_augment("rand-inc1").op_names
    assert "Posterize" in parse_rand_augment("rand").op_names
