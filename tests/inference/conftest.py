import pytest
from inferencehelpers import asymmetric_rgb, tiny

from deit.models import VisionTransformer


@pytest.fixture
def model() -> VisionTransformer:
    return tiny()


@pytest.fixture
def image_files(tmp_path):
    """Two readable images, a missing path, and a text file pretending to be a JPEG."""
    good1 = tmp_path / "a.png"
    good2 = tmp_path / "b.jpg"
    asymmetric_rgb(seed=1).save(good1)
    asymmetric_rgb(40, 40, seed=2).save(good2, quality=95)
    fake = tmp_path / "notes.jpg"
    fake.write_text("this is not an image")
    return {"good1": good1, "good2": good2, "missing": tmp_path / "missing.png", "fake": fake}
