"""The registry's public names."""

import pytest


def test_one_create_model_the_architecture_builder_has_its_own_name():
    import deit
    import deit.models

    model = deit.models.build_architecture("deit_tiny_patch16_224", depth=1, img_size=32, num_classes=3)
    assert model.num_classes == 3 and len(model.blocks) == 1
    with pytest.raises(AttributeError, match="build_architecture.*deit.create_model"):
        deit.models.create_model  # noqa: B018  (the old name says where each job went)
    assert "create_model" not in deit.models.__all__ and callable(deit.create_model)
