import dataclasses

import pytest

from tether.config import (
    ConfigError,
    PreferenceConfig,
    RewardModelConfig,
    SFTConfig,
    describe_fields,
    load_config,
    parse_override,
)


def test_yaml_then_overrides_with_recipe_defaults(tmp_path):
    path = tmp_path / "rm.yaml"
    path.write_text("train:\n  batch_size: 4\nmodel:\n  lora: {enabled: true}\n")
    cfg = load_config(RewardModelConfig, path, ["train.seed=7", "model.lora.r=8", "center_coef=0.01"])
    assert cfg.train.batch_size == 4
    assert cfg.train.seed == 7
    # a partial `train:` section keeps the reward model's own learning-rate default, not the generic one
    assert cfg.train.learning_rate == 1e-5
    assert cfg.model.lora.enabled is True and cfg.model.lora.r == 8 and cfg.model.lora.alpha == 32
    assert cfg.center_coef == 0.01


def test_override_value_parsing():
    assert parse_override("train.learning_rate=3e-4") == ("train.learning_rate", 3e-4)
    assert parse_override("model.lora.enabled=true") == ("model.lora.enabled", True)
    assert parse_override("--train.seed=3") == ("train.seed", 3)
    assert parse_override("model.config_overrides={num_hidden_layers: 2}") == (
        "model.config_overrides", {"num_hidden_layers": 2})


@pytest.mark.parametrize("override, message", [
    ("train.learnin_rate=1e-3", "did you mean 'train.learning_rate'"),
    ("train.batch_size=abc", "train.batch_size: expected an integer"),
    ("train.batch_size=0", "train.batch_size: must be > 0"),
    ("train.lr_scheduler=exponential", "not one of cosine, linear, constant"),
    ("model.random_init=maybe", "expected true or false"),
    ("data.eval_fraction=1.5", "must be in [0, 1)"),
    ("kl_coef=-1", "kl_coef: must be > 0"),
    ("train=3", "train: expected a mapping"),
    ("nonsense", "overrides look like key=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(PreferenceConfig, None, [override])
    assert message in str(info.value)


SAMPLING_CONFIGS = ("PPOConfig", "GRPOConfig", "BestOfNConfig", "RejectionSamplingConfig", "SampleConfig")


@pytest.mark.parametrize("name", SAMPLING_CONFIGS)
def test_every_sampling_config_checks_its_sampling_settings(name):
    import tether.config as config

    cls = getattr(config, name)
    assert load_config(cls, None, ["max_new_tokens=32", "min_new_tokens=32"]).min_new_tokens == 32
    with pytest.raises(ConfigError, match=r"min_new_tokens \(33\) cannot exceed max_new_tokens \(32\)"):
        load_config(cls, None, ["max_new_tokens=32", "min_new_tokens=33"])
    with pytest.raises(ConfigError, match="min_new_tokens: must be >= 0"):
        load_config(cls, None, ["min_new_tokens=-1"])
    with pytest.raises(ConfigError, match=r"top_p: must be in \(0, 1\], got 0.0"):
        load_config(cls, None, ["top_p=0"])
    assert load_config(cls, None, ["top_p=1", "temperature=0.7"]).temperature == 0.7


def test_the_sampling_fields_are_declared_once():
    """Every sampling config takes its sampling fields (doc, bounds) from SamplingFields; `tether sample` only changes
    two defaults."""
    from dataclasses import fields

    import tether.config as config
    from tether.config.sections import SamplingFields

    shared = {f.name: f.metadata for f in fields(SamplingFields)}
    for name in SAMPLING_CONFIGS:
        own = {f.name: f.metadata for f in fields(getattr(config, name)) if f.name in shared}
        assert own == shared, name
    assert (config.SampleConfig().max_new_tokens, config.SampleConfig().temperature) == (64, 0.9)
    assert (config.BestOfNConfig().max_new_tokens, config.BestOfNConfig().temperature) == (48, 1.0)


def test_bad_yaml_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(SFTConfig, path)
    path.write_text("- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(SFTConfig, path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SFTConfig, tmp_path / "missing.yaml")


def test_every_field_is_documented():
    for cls in (SFTConfig, RewardModelConfig, PreferenceConfig):
        rows = describe_fields(cls)
        keys = [r[0] for r in rows]
        assert "train.learning_rate" in keys and "model.lora.r" in keys and "data.max_length" in keys
        undocumented = [r[0] for r in rows if not r[3]]
        assert undocumented == []


def test_loss_names_match_the_registry():
    import typing

    from tether.algos.losses.preference import PREFERENCE_LOSSES
    from tether.config import PreferenceLossName

    assert set(typing.get_args(PreferenceLossName)) == set(PREFERENCE_LOSSES)


def test_trust_remote_code_is_off_unless_asked():
    from tether.config import ModelConfig, PPOConfig, SFTConfig

    assert ModelConfig().trust_remote_code is False
    assert SFTConfig().model.trust_remote_code is False and PPOConfig().model.trust_remote_code is False
    assert load_config(SFTConfig, None, ["model.trust_remote_code=true"]).model.trust_remote_code is True


def test_a_field_without_bounds_is_not_range_checked():
    """Range checks come from the field's own metadata, not its name: a `k` without bounds takes -1."""
    import dataclasses

    from tether.config import POSITIVE, doc_field, validate

    @dataclasses.dataclass
    class Section:
        r: int = doc_field(1, "Same name as LoRA's rank, no bounds.")

    @dataclasses.dataclass
    class Unbounded:
        k: int = doc_field(4, "Same name as SampleConfig.k, no bounds.")
        temperature: float = doc_field(1.0, "No bounds.")
        section: Section = doc_field(Section(), "A nested section.")

    validate(Unbounded(k=-1, temperature=0.0, section=Section(r=-3)))  # accepted: no bounds, no check

    @dataclasses.dataclass
    class Bounded:  # the same field with bounds: the same value is refused, naming the key
        k: int = doc_field(4, "With bounds.", bounds=POSITIVE)

    with pytest.raises(ConfigError, match="k: must be > 0, got -1"):
        validate(Bounded(k=-1))


@pytest.mark.parametrize("bounds, bad, message", [
    ("POSITIVE", 0, "outer.size: must be > 0, got 0.0"),
    ("NON_NEGATIVE", -1, "outer.size: must be >= 0, got -1.0"),
    ("FRACTION", 1.0, "outer.size: must be in [0, 1), got 1.0"),
])
def test_a_field_with_bounds_rejects_a_bad_value_naming_the_dotted_key(bounds, bad, message):
    import dataclasses

    import tether.config
    from tether.config import doc_field, from_dict, validate

    @dataclasses.dataclass
    class Inner:
        size: float = doc_field(0.5, "A bounded field.", bounds=getattr(tether.config, bounds))

    @dataclasses.dataclass
    class Outer:
        outer: Inner = doc_field(Inner(), "A nested section.")

    validate(Outer())
    validate(Outer(outer=Inner(size=None)))  # not a number: left to the type check
    with pytest.raises(ConfigError) as info:
        validate(from_dict(Outer, {"outer": {"size": bad}}))
    assert str(info.value) == message
    # the recipes' own bounded fields, through load_config
    with pytest.raises(ConfigError, match=r"model\.lora\.r: must be > 0, got 0"):
        load_config(SFTConfig, None, ["model.lora.r=0"])


def test_bounds_are_only_on_numeric_fields():
    import dataclasses
    import types
    import typing

    from tether.recipes.registry import RECIPES

    def check(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if dataclasses.is_dataclass(tp):
                check(tp)
            elif "bounds" in f.metadata:
                options = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
                assert set(options) & {int, float}, f"{cls.__name__}.{f.name}: bounds on a {tp}"

    for recipe in RECIPES.values():
        check(recipe.config)


def test_old_names_of_the_kl_coefficient_are_still_read_with_a_note(capsys):
    from tether.config import FrontierConfig, PipelineConfig, PPOConfig, PreferenceConfig

    assert load_config(PPOConfig, None, ["init_kl_coef=0.3"]).kl_coef == 0.3
    assert load_config(PreferenceConfig, None, ["beta=0.7"]).kl_coef == 0.7
    frontier = load_config(FrontierConfig, None, ["betas=[1.0,0.5]", "dpo_betas=[0.2]", "ppo.init_kl_coef=0.4"])
    assert (frontier.kl_coefs, frontier.dpo_kl_coefs, frontier.ppo.kl_coef) == ([1.0, 0.5], [0.2], 0.4)
    assert load_config(PipelineConfig, None, ["dpo.beta=0.2"]).dpo.kl_coef == 0.2  # in a section too
    err = capsys.readouterr().err
    assert "init_kl_coef is now called kl_coef" in err and "dpo.beta is now called dpo.kl_coef" in err
    with pytest.raises(ConfigError, match="give kl_coef alone"):
        load_config(PPOConfig, None, ["init_kl_coef=0.3", "kl_coef=0.2"])


def test_the_kl_coefficient_has_one_name_in_every_recipe():
    from tether.recipes.registry import RECIPES

    for command in ("ppo", "grpo", "dpo", "quickstart"):
        names = {f.name for f in dataclasses.fields(RECIPES[command].config)}
        assert "kl_coef" in names and not names & {"init_kl_coef", "beta", "betas"}, command
