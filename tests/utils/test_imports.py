"""``module:name`` specs: one importer for reward functions, gold utilities and hooks."""

import pytest

from tether.utils.imports import import_object


def test_a_spec_names_a_module_attribute():
    from tether.tasks import sentiment

    assert import_object("tether.tasks.sentiment:gold_reward") is sentiment.gold_reward


def test_modules_beside_the_working_directory_are_found(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_for_test.py").write_text("def length(prompts, responses, ids):\n    return [1.0]\n")
    monkeypatch.chdir(tmp_path)
    assert import_object("my_rewards_for_test:length")([], ["a"], [[1]]) == [1.0]


@pytest.mark.parametrize("spec, message", [("tether.tasks.sentiment", "not module:function"),
                                           (":gold_reward", "not module:function"),
                                           ("tether.tasks.sentiment:no_such", "has no 'no_such'"),
                                           ("tether.no_such_module:f", "No module named")])
def test_a_bad_spec_is_an_import_error_naming_it(spec, message):
    with pytest.raises(ImportError, match=message):
        import_object(spec)
