import numpy as np
import pytest
import torch
from inferencehelpers import asymmetric_rgb, tiny
from PIL import Image

from deit.data.images import decode_image
from deit.inference import Predictor, format_predictions, imagenet_class_names, resolve_class_names

EXIF_ORIENTATION = 0x0112


def assert_same_scores(a, b):
    """Same classes in the same order, probabilities equal up to float noise (batch composition changes kernels)."""
    assert a.ok and b.ok
    assert [c.index for c in a.top_k] == [c.index for c in b.top_k]
    assert [c.probability for c in a.top_k] == pytest.approx([c.probability for c in b.top_k], abs=1e-6)


def test_top1_matches_the_model_on_the_same_tensor(model, image_files):
    predictor = Predictor(model)
    x = predictor.transform(decode_image(image_files["good1"])).unsqueeze(0)
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        probs = model(x).softmax(-1)[0]
    [result] = predictor.predict([image_files["good1"]], top_k=3)
    assert result.ok and len(result.top_k) == 3
    assert result.top_k[0].index == int(probs.argmax())
    assert result.top_k[0].probability == pytest.approx(float(probs.max()), abs=1e-6)
    assert [c.probability for c in result.top_k] == sorted((c.probability for c in result.top_k), reverse=True)


def test_heads_cls_dist_avg_are_the_model_heads(model, image_files):
    x = Predictor(model).preprocess(image_files["good2"]).unsqueeze(0)
    with torch.no_grad():
        cls_logits, dist_logits = model.forward_heads(x)
    expected = {"cls": cls_logits, "dist": dist_logits, "avg": (cls_logits + dist_logits) / 2}
    for head, logits in expected.items():
        torch.testing.assert_close(Predictor(model, head=head).logits(x), logits)
    with pytest.raises(ValueError, match="distilled"):
        Predictor(tiny(distilled=False), head="dist")


def test_exif_rotated_input_is_turned_upright(model, tmp_path):
    upright = asymmetric_rgb(48, 30)
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes; orientation 6 undoes it
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    png, jpg = tmp_path / "rotated.png", tmp_path / "rotated.jpg"
    stored.save(png, exif=exif)
    stored.save(jpg, exif=exif, quality=100)
    predictor = Predictor(model)
    assert predictor.load_image(png).size == upright.size == predictor.load_image(jpg).size == (48, 30)
    # The test has teeth: ignoring the tag would feed the model a different tensor.
    assert not torch.allclose(predictor.preprocess(stored), predictor.preprocess(upright))
    torch.testing.assert_close(predictor.preprocess(png), predictor.preprocess(upright))
    from_file, from_memory = predictor.predict([png, upright], top_k=5)
    assert_same_scores(from_file, from_memory)
    # An in-memory image carrying the tag is turned upright too.
    tagged = Image.open(png)
    torch.testing.assert_close(predictor.preprocess(tagged), predictor.preprocess(upright))


@pytest.mark.parametrize("mode", ["L", "LA", "P", "RGBA", "I;16", "CMYK", "1"])
def test_grayscale_and_other_modes_are_predicted(model, tmp_path, mode):
    rgb = asymmetric_rgb()
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
        assert img.mode == "I;16"
    else:
        img = rgb.convert(mode)
    path = tmp_path / ("img.tiff" if mode == "CMYK" else "img.png")
    img.save(path)
    predictor = Predictor(model)
    [result] = predictor.predict([path], top_k=2)
    assert result.ok, result.error
    assert len(result.top_k) == 2
    if mode == "L":  # gray replicated to three channels
        x = predictor.preprocess(path)
        torch.testing.assert_close(x, predictor.preprocess(img.convert("RGB")))


def test_a_bad_file_in_the_middle_does_not_stop_the_others(model, image_files):
    predictor = Predictor(model, batch_size=2)
    folder = image_files["good2"].parent
    paths = [image_files["good1"], image_files["missing"], image_files["fake"], image_files["good2"], folder]
    results = predictor.predict(paths, top_k=2)
    assert [r.source for r in results] == [str(p) for p in paths]
    assert [r.ok for r in results] == [True, False, False, True, False]
    assert "missing.png" in results[1].error and "no such file" in results[1].error
    assert "notes.jpg" in results[2].error
    assert "directory" in results[4].error
    alone = predictor.predict([image_files["good1"], image_files["good2"]], top_k=2)
    assert_same_scores(results[0], alone[0])
    assert_same_scores(results[3], alone[1])
    text = format_predictions(results)
    assert "ERROR" in text and str(image_files["good2"]) in text
    assert results[1].to_dict().keys() == {"source", "error"}
    assert results[0].to_dict()["predictions"][0].keys() == {"index", "name", "probability"}


def test_batching_does_not_change_results(model, image_files):
    paths = [image_files["good1"], image_files["good2"]] * 3
    one = Predictor(model, batch_size=1).predict(paths)
    many = Predictor(model, batch_size=8).predict(paths)
    for a, b in zip(one, many, strict=True):
        assert_same_scores(a, b)


def test_class_names_stored_then_imagenet_then_generic(model, image_files):
    assert resolve_class_names(model) == [f"class_{i}" for i in range(5)]
    model.class_names = ["zero", "one", "two", "three", "four"]
    [r] = Predictor(model).predict([image_files["good1"]], top_k=5)
    assert {c.name for c in r.top_k} == set(model.class_names)
    assert all(c.name == model.class_names[c.index] for c in r.top_k)
    big = tiny(num_classes=1000)
    names = resolve_class_names(big)
    assert names == list(imagenet_class_names())
    assert (names[0], names[1], names[281], names[999]) == ("tench", "goldfish", "tabby", "toilet tissue")
    assert len(set(names)) == 998  # the standard list repeats "crane" (134, 517) and "maillot" (638, 639)
    [r] = Predictor(big).predict([image_files["good1"]], top_k=1)
    assert r.top_k[0].name == names[r.top_k[0].index]


def test_top_k_is_capped_at_the_class_count(model, image_files):
    [r] = Predictor(model).predict(image_files["good1"], top_k=50)
    assert len(r.top_k) == 5
    assert sum(c.probability for c in r.top_k) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="top_k"):
        Predictor(model).predict([image_files["good1"]], top_k=0)
