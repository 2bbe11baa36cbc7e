"""The configuration file (SPEC 5): defaults, folders, environment overrides, located errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from hotfolder.cli import examples
from hotfolder.config import DEFAULT_CONFIG, Config, config_path, env_overrides, load_config
from hotfolder.errors import ConfigError


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "hotfolder.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_an_empty_file_gives_the_documented_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, ""), environ={})
    assert config.root == tmp_path.resolve()
    assert config.default_recipe is None
    assert config.watch.mode == "auto" and config.watch.settle_seconds == 2
    assert "*.part" in config.watch.ignore
    assert config.limits.max_file_bytes == 50 * 1024 * 1024
    assert config.limits.max_pixels == 100_000_000
    assert config.scanner.clamd == "unix:///run/clamav/clamd.ctl" and config.scanner.enabled
    assert config.scanner.on_unavailable == "hold"
    assert config.queue.url == "sqlite:///state/queue.db"
    assert config.output.on_conflict == "rename" and config.output.archive_days == 30
    assert config.metrics.listen == "127.0.0.1:9464"
    assert config.recipes.inline == "allow"


def test_the_example_configuration_states_every_setting_with_its_default(tmp_path: Path) -> None:
    text = (examples() / "hotfolder.yaml").read_text(encoding="utf-8")
    # The paths section is shown commented out: uncommented, it must be the defaults too.
    text = re.sub(r"(?m)^# (?=paths:|  [a-z]+: )", "", text)
    stated = yaml.safe_load(text)
    for name, field in Config.model_fields.items():
        assert name in stated, f"{name} is not in the example configuration"
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            assert sorted(stated[name]) == sorted(section.model_fields), name
    example = load_config(write_config(tmp_path, text), environ={})
    default = load_config(write_config(tmp_path, ""), environ={})
    assert example.model_dump(exclude={"paths"}) == default.model_dump(exclude={"paths"})
    assert example.layout == default.layout


def test_folders_are_absolute_and_relative_to_the_root(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, """\
root: srv
paths:
  outbox: /data/out
  failed: bad
"""), environ={})
    layout = config.layout
    root = (tmp_path / "srv").resolve()
    assert layout.root == root
    assert layout.inbox == root / "inbox"
    assert layout.outbox == Path("/data/out")
    assert layout.failed == root / "bad"
    assert layout.work == root / "inbox" / ".hotfolder"
    assert layout.state == root / "state" and layout.recipes == root / "recipes"


def test_environment_overrides_nested_settings(tmp_path: Path) -> None:
    path = write_config(tmp_path, "scanner:\n  clamd: unix:///run/clamav/clamd.ctl\n")
    config = load_config(path, environ={
        "HOTFOLDER_SCANNER__CLAMD": "tcp://127.0.0.1:3310",
        "HOTFOLDER_QUEUE__WORKERS": "3",
        "HOTFOLDER_OUTPUT__ARCHIVE": "false",
        "HOTFOLDER_METRICS__LISTEN": "off",
        "HOTFOLDER_CONFIG": str(path),
        "OTHER_VARIABLE": "ignored",
    })
    assert config.scanner.clamd == "tcp://127.0.0.1:3310"
    assert config.queue.worker_count == 3
    assert config.output.archive is False
    assert config.metrics.listen is None


def test_env_overrides_tree() -> None:
    assert env_overrides({"HOTFOLDER_SCANNER__CLAMD": "off", "HOTFOLDER_DEFAULT_RECIPE": "web",
                          "HOTFOLDER_CONFIG": "/x", "PATH": "/bin"}) == {
        "scanner": {"clamd": "off"}, "default_recipe": "web"}


def test_a_bad_environment_override_names_the_variable_not_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "scanner:\n  clamd: unix:///run/clamav/clamd.ctl\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={"HOTFOLDER_SCANNER__CLAMD": "bogus"})
    assert caught.value.message.startswith(
        "HOTFOLDER_SCANNER__CLAMD, key scanner.clamd: must be off, unix:///path/to/socket"
    )


@pytest.mark.parametrize(("text", "message"), [
    ("watch:\n  mode: events\n  setle_seconds: 3\n",
     r"hotfolder\.yaml, line 3, key watch\.setle_seconds: unknown key"),
    ("scanner:\n  clamd: clamd.sock\n",
     r"hotfolder\.yaml, line 2, key scanner\.clamd: must be off, unix:///path"),
    ("queue:\n  url: postgres://db\n", r"line 2, key queue\.url: must start with sqlite://"),
    ("queue:\n  workers: -1\n", r"line 2, key queue\.workers"),
    ("metrics:\n  listen: 9464\n", r"line 2, key metrics\.listen"),
    ("limits:\n  formats: [jpeg, eps]\n", r"line 2, key limits\.formats\.1"),
    ("output:\n  s3: {bucket: b}\n", r"key output\.s3\.bucket: .*at least 3 characters"),
    ("scanner: [1,\n", r"hotfolder\.yaml, line 2: not valid YAML"),
    ("- a\n- b\n", r"hotfolder\.yaml: the configuration must be a mapping"),
    ("recipes:\n  inline: no\n", r"line 2, key recipes\.inline: must be 'allow' or 'deny'$"),
    ("a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
     "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
     "d: [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n",
     r"hotfolder\.yaml, line 4: refused: it holds more than 10000 values once its aliases"),
])
def test_config_errors_name_the_file_the_line_and_the_key(tmp_path: Path, text: str,
                                                          message: str) -> None:
    path = write_config(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as caught:
        load_config(path, environ={})
    assert str(path) in caught.value.message


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nothere\.yaml: configuration file not found"):
        load_config(tmp_path / "nothere.yaml", environ={})


def test_config_path_order(tmp_path: Path) -> None:
    assert config_path("/a.yaml", {"HOTFOLDER_CONFIG": "/b.yaml"}) == Path("/a.yaml")
    assert config_path(None, {"HOTFOLDER_CONFIG": "/b.yaml"}) == Path("/b.yaml")
    assert config_path(None, {}) == DEFAULT_CONFIG


def test_load_config_uses_the_environment_variable_for_the_path(tmp_path: Path) -> None:
    path = write_config(tmp_path, "default_recipe: web\n")
    assert load_config(None, environ={"HOTFOLDER_CONFIG": str(path)}).default_recipe == "web"


def test_off_in_the_file_means_off_not_false(tmp_path: Path) -> None:
    """YAML 1.1 reads a bare `off` as false; `clamd: off` must still switch the scanner off."""
    config = load_config(write_config(tmp_path, """\
scanner:
  clamd: off
metrics:
  listen: off
output:
  archive: no
"""), environ={})
    assert config.scanner.clamd == "off" and not config.scanner.enabled
    assert config.metrics.listen is None
    assert config.output.archive is False


def test_an_environment_value_that_is_not_yaml_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"HOTFOLDER_WATCH__IGNORE, line 2: not valid YAML"):
        load_config(write_config(tmp_path, ""), environ={"HOTFOLDER_WATCH__IGNORE": "[a,\n"})
