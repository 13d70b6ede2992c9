"""A skeleton backbone (config and layers on the meta device, no weights) gives every module
kind the config the loaded backbone gives, and refuses what it refuses: checks made on it at
queue time are the ones training makes."""

from __future__ import annotations

import pytest

from continual.modules import module_kind, module_kinds
from continual.skeleton import skeleton_backbone
from tasks.errors import AssetError, ConfigError

OPTIONS = {"prefix": {"length": 8}, "ptuning": {"length": 8}, "prompt": {"length": 4}}


@pytest.mark.parametrize("which", ["tiny_encoder", "tiny_decoder"])
def test_a_skeleton_has_the_shapes_and_no_weights(which: str, request) -> None:
    loaded = request.getfixturevalue(which)
    skeleton = skeleton_backbone(str(request.getfixturevalue(f"{which}_dir")))
    assert (skeleton.name, skeleton.kind) == (loaded.name, loaded.kind)
    assert skeleton.geometry == loaded.geometry and skeleton.fingerprint == ""
    # the prefix's rules read the config only: the layers are not built for them
    assert module_kind("prefix").config_for(skeleton, length=8) is not None
    assert not skeleton.model.built
    params = list(skeleton.model.parameters())
    assert skeleton.model.built and all(p.is_meta for p in params)
    assert sum(p.numel() for p in params) == loaded.n_params
    for kind in module_kinds():
        plugin, options = module_kind(kind), OPTIONS.get(kind, {})
        try:
            want = plugin.config_for(loaded, **options).to_dict()
        except ConfigError as e:  # BitFit on the Llama-like decoder: no bias terms
            with pytest.raises(ConfigError, match="no bias terms"):
                plugin.config_for(skeleton, **options)
            assert "no bias terms" in str(e)
            continue
        got = plugin.config_for(skeleton, **options).to_dict()
        if kind == "prompt":  # the spread of the embeddings is read off the weights
            assert want.pop("init_std") > 0 and got.pop("init_std") > 0
        assert got == want, kind


def test_a_skeleton_refuses_what_training_refuses(tiny_encoder_dir) -> None:
    skeleton = skeleton_backbone(str(tiny_encoder_dir))
    with pytest.raises(ConfigError, match=r"context \(128 positions\)"):
        module_kind("prefix").config_for(skeleton, length=129)
    with pytest.raises(ConfigError, match="leaves no room"):
        module_kind("prompt").config_for(skeleton, length=128)
    with pytest.raises(ConfigError, match="'nowhere' matches no layer"):
        module_kind("lora").config_for(skeleton, targets=["nowhere"])


def test_a_folder_without_a_model_is_one_line(tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises((AssetError, ConfigError)) as e:
        skeleton_backbone(str(tmp_path))
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_a_folder_saved_over_is_read_again(tiny_encoder_dir, tmp_path) -> None:
    """The queue-time check caches a backbone's skeleton per process, but not past a change of
    its config.json: another model saved under the same path is checked as itself."""
    import json
    import os
    import shutil

    from pipelines.arrival.plan import ArrivalPlan
    from pipelines.stream import check_on_backbone
    from tasks.load import DataArgs

    folder = shutil.copytree(tiny_encoder_dir, tmp_path / "model")
    plan = ArrivalPlan(name="t", data=DataArgs(dataset="trec"), prefix_length=100)
    check_on_backbone((plan,), str(folder), where="s.yaml", strict=True)  # 128 positions
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 64}))
    later = (folder / "config.json").stat().st_mtime_ns + 10**9  # whatever the clock's step
    os.utime(folder / "config.json", ns=(later, later))
    with pytest.raises(ConfigError, match=r"s.yaml: arrival t: prefix length 100 .*\(64 positions"):
        check_on_backbone((plan,), str(folder), where="s.yaml", strict=True)
