"""The config file's prometheus and models sections: parsed, or refused with key, value and allowed range."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.config import ConfigError, load_config, parse_config

GOOD = {
    "prometheus": {"url": "https://prom.example:9090", "bearer_token": "t", "timeout_s": 10},
    "models": [{"name": "llama-8b", "query": "sum(rate(x[1m]))", "step_s": 30, "history_days": 7}],
}


def test_a_valid_config_becomes_the_source_settings_and_queries() -> None:
    cfg = parse_config(GOOD)
    assert cfg.prometheus is not None
    settings = cfg.prometheus.settings()
    assert (settings.url, settings.bearer_token, settings.timeout_s) == ("https://prom.example:9090", "t", 10)
    q = cfg.models[0].query_spec()
    assert (q.name, q.step_s, q.history_s, q.max_staleness_s) == ("llama-8b", 30, 7 * 86_400, 300.0)


def test_the_bearer_token_can_come_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("abc\n")
    cfg = parse_config({"prometheus": {"url": "http://p:9090", "bearer_token_file": str(tmp_path / "token")}})
    assert cfg.prometheus is not None and cfg.prometheus.settings().bearer_token == "abc"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        pytest.param(
            {"step_s": 0}, "models.0.step_s=0: Input should be greater than or equal to 1", id="step"
        ),
        pytest.param(
            {"history_days": 999},
            "models.0.history_days=999: Input should be less than or equal to 400",
            id="history",
        ),
        pytest.param(
            {"capacity_rps": -1}, "models.0.capacity_rps=-1: Input should be greater than 0", id="capacity"
        ),
        pytest.param(
            {"min_replicas": 5, "max_replicas": 2}, "max_replicas=2 must be >= min_replicas=5", id="bounds"
        ),
        pytest.param({"stepp_s": 60}, "models.0.stepp_s=60: Extra inputs are not permitted", id="typo"),
        pytest.param(
            {"gpus_per_replica": 0}, "models.0.gpus_per_replica=0: Input should be greater than 0", id="gpus"
        ),
        pytest.param(
            {"priority": 5000},
            "models.0.priority=5000: Input should be less than or equal to 1000",
            id="priority",
        ),
    ],
)
def test_a_bad_model_is_refused_naming_key_value_and_range(change: dict[str, object], words: str) -> None:
    doc = {"models": [{**GOOD["models"][0], **change}]}  # type: ignore[dict-item]
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert words in str(info.value)


def test_repeated_model_names_and_mixed_auth_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        parse_config({"models": [{"name": "a", "query": "q"}, {"name": "a", "query": "q"}]})
    with pytest.raises(ConfigError, match="not both"):
        parse_config(
            {"prometheus": {"url": "http://p:9090", "bearer_token": "t", "username": "u", "password": "p"}}
        )
    with pytest.raises(ConfigError, match=r"prometheus.url='ftp://x'"):
        parse_config({"prometheus": {"url": "ftp://x"}})


def test_unreadable_and_malformed_files_say_so(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(bad)


def test_the_shipped_example_config_parses_and_documents_every_option() -> None:
    from service.config import (
        ApiConfig,
        ComputeConfig,
        KubernetesConfig,
        ModelConfig,
        PrometheusConfig,
        QueryGroupConfig,
        RayConfig,
        SchedulesConfig,
        StoreConfig,
        TargetConfig,
    )

    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    cfg = load_config(example)
    assert cfg.models[0].target is not None and cfg.models[0].target.kind == "Deployment"
    text = example.read_text()
    for section in (
        PrometheusConfig,
        ModelConfig,
        TargetConfig,
        ApiConfig,
        StoreConfig,
        SchedulesConfig,
        KubernetesConfig,
        RayConfig,
        ComputeConfig,
        QueryGroupConfig,
    ):
        for key in section.model_fields:
            assert f"{key}:" in text, f"{section.__name__}.{key} is not documented in config.example.yaml"


def test_environment_variables_override_the_file(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parent.parent / "config.example.yaml"
    env = {
        "PREWARM_API__TOKEN": "from-env",
        "PREWARM_SCHEDULES__TICK_S": "15",
        "PREWARM_KILL_SWITCH": "true",
        "HOME": "/root",
    }
    cfg = load_config(example, env)
    assert (cfg.api.token, cfg.schedules.tick_s, cfg.kill_switch) == ("from-env", 15, True)
    with pytest.raises(ConfigError, match=r"schedules.tick_s=0: Input should be greater than or equal to 1"):
        load_config(example, {"PREWARM_SCHEDULES__TICK_S": "0"})


def test_a_target_mode_that_does_not_fit_its_kind_is_refused() -> None:
    doc = {
        "models": [
            {
                **GOOD["models"][0],
                "target": {"kind": "RayServe", "namespace": "app", "name": "d", "actuator_mode": "hpa-floor"},
            }
        ]
    }  # type: ignore[dict-item]
    with pytest.raises(
        ConfigError, match="actuator_mode='hpa-floor' for kind RayServe; allowed: floor, direct"
    ):
        parse_config(doc)


def test_a_fleet_budget_outside_its_range_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"fleet.gpu_budget=0: Input should be greater than 0"):
        parse_config({**GOOD, "fleet": {"gpu_budget": 0}})
    assert parse_config({**GOOD, "fleet": {"gpu_budget": 24}}).fleet.gpu_budget == 24


@pytest.mark.parametrize(
    ("compute", "words"),
    [
        pytest.param(
            {"workers": 0}, "compute.workers=0: Input should be greater than or equal to 1", id="workers"
        ),
        pytest.param(
            {"backend": "dask"}, "compute.backend='dask': Input should be 'local' or 'ray'", id="backend"
        ),
        pytest.param(
            {"retries": 11}, "compute.retries=11: Input should be less than or equal to 10", id="retries"
        ),
        pytest.param(
            {"worker_nice": 20},
            "compute.worker_nice=20: Input should be less than or equal to 19",
            id="worker-nice",
        ),
        pytest.param(
            {"pause_for_tick": "sometimes"},
            "compute.pause_for_tick='sometimes': Input should be a valid boolean",
            id="pause-for-tick",
        ),
        pytest.param(
            {"ray_address": "10.0.0.1:6379"},
            "ray_address='10.0.0.1:6379' needs backend: ray (backend is 'local')",
            id="address-without-ray",
        ),
    ],
)
def test_a_bad_compute_section_is_refused_naming_key_value_and_range(
    compute: dict[str, object], words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({**GOOD, "compute": compute})
    assert words in str(err.value)


def test_the_command_line_overrides_the_compute_section_and_is_checked_the_same_way() -> None:
    from service.config import with_compute

    cfg = parse_config({**GOOD, "compute": {"workers": 4}})
    assert with_compute(cfg, {"backend": "ray", "ray_address": "auto"}).compute.workers == 4
    with pytest.raises(ConfigError, match=r"command line compute: workers=-1"):
        with_compute(cfg, {"workers": -1})


def test_a_query_group_gives_its_models_one_shared_query_split_by_its_label() -> None:
    doc = {
        **GOOD,
        "models": [
            *GOOD["models"],  # type: ignore[list-item]
            {"name": "b", "query_group": "vllm"},
            {"name": "c", "query_group": "vllm", "label_value": "c-7b"},
        ],
        "query_groups": [{"name": "vllm", "query": "sum by (model) (rate(x[1m]))", "step_s": 30}],
    }
    specs = {q.name: q for q in parse_config(doc).query_specs()}
    assert specs["b"].group == specs["c"].group == "vllm" and specs["b"].step_s == 30
    assert (specs["b"].label, specs["b"].label_value, specs["c"].label_value) == ("model", "b", "c-7b")
    assert specs[GOOD["models"][0]["name"]].group is None  # type: ignore[index]


@pytest.mark.parametrize(
    ("models", "words"),
    [
        pytest.param([{"name": "b", "query_group": "nope"}],
                     "models.1.query_group='nope' names no query group", id="unknown-group"),
        pytest.param([{"name": "b"}], "give query (this model's own PromQL) or query_group", id="neither"),
        pytest.param([{"name": "b", "query": "x", "query_group": "vllm"}], "exactly one", id="both"),
        pytest.param([{"name": "b", "query": "x", "label_value": "y"}], "label_value='y' needs query_group",
                     id="label-without-group"),
    ],
)  # fmt: skip
def test_a_model_must_name_one_query_or_an_existing_group(
    models: list[dict[str, object]], words: str
) -> None:
    doc = {**GOOD, "models": [*GOOD["models"], *models], "query_groups": [{"name": "vllm", "query": "q"}]}  # type: ignore[list-item]
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("env", "flags", "expected"),
    [
        pytest.param({}, {}, ("from-file", "sqlite:///file.db", 8080), id="the file over the defaults"),
        pytest.param(
            {"PREWARM_API_TOKEN": "from-env", "PREWARM_STORE__URL": "sqlite:///env.db"},
            {},
            ("from-env", "sqlite:///env.db", 8080),
            id="the environment over the file",
        ),
        pytest.param(
            {"PREWARM_API_TOKEN": "from-env", "PREWARM_API__PORT": "9000"},
            {"api.token": "from-flag", "store.url": "sqlite:///flag.db", "api.port": 9100},
            ("from-flag", "sqlite:///flag.db", 9100),
            id="a flag over the environment",
        ),
    ],
)
def test_one_precedence_for_every_option_flag_then_environment_then_file_then_default(
    env: dict[str, str], flags: dict[str, object], expected: tuple[object, ...]
) -> None:
    doc = {**GOOD, "api": {"token": "from-file"}, "store": {"url": "sqlite:///file.db"}}
    cfg = parse_config(doc, env=env, overrides=flags)
    assert (cfg.api.token, cfg.store.url, cfg.api.port) == expected


def test_a_token_given_higher_up_replaces_a_token_file_given_lower_down(tmp_path: Path) -> None:
    doc = {**GOOD, "api": {"token_file": str(tmp_path / "missing")}}
    cfg = parse_config(doc, env={"PREWARM_API_TOKEN": "from-env"})
    assert (cfg.api.token, cfg.api.token_file) == ("from-env", None)
    with pytest.raises(ConfigError, match="api: give token or token_file, not both"):
        parse_config({**GOOD, "api": {"token": "a", "token_file": "/x"}})


def test_a_token_file_that_does_not_exist_yet_refuses_posts_but_never_stops_the_service(
    tmp_path: Path,
) -> None:
    from service.config import ApiToken

    path = tmp_path / "api-token"
    token = ApiToken(parse_config({**GOOD, "api": {"token_file": str(path)}}).api)
    assert token.token() is None and "does not exist (create its Secret)" in token.why_none()
    path.write_text("rotated\n")  # the Secret appears: read at the next request, no restart
    assert token.token() == "rotated"
    path.write_text("")
    assert token.token() is None and "is empty" in token.why_none()


@pytest.mark.parametrize(
    ("lease", "words"),
    [
        pytest.param(
            {"lease_duration_s": 10, "renew_deadline_s": 10},
            "lease_duration_s=10 must be > renew_deadline_s=10",
            id="a lease no longer than the deadline",
        ),
        pytest.param(
            {"renew_deadline_s": 2, "retry_period_s": 2},
            "renew_deadline_s=2 must be > 1.2 x retry_period_s (2.4)",
            id="a deadline that allows one renew attempt",
        ),
    ],
)
def test_a_lease_too_short_for_its_renew_period_is_refused(lease: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"kubernetes: {words}")):
        parse_config({**GOOD, "kubernetes": lease})


def test_a_prewarm_variable_that_names_no_config_key_is_left_alone_but_a_misspelt_key_is_refused() -> None:
    cfg = parse_config(GOOD, env={"PREWARM_TEST_KUBECONFIG": "/tmp/k", "PREWARM_KUBE_RUN_DIR": "/tmp/r"})
    assert cfg.models[0].name == "llama-8b"
    with pytest.raises(ConfigError, match=r"api.tokn='x': Extra inputs are not permitted"):
        parse_config(GOOD, env={"PREWARM_API__TOKN": "x"})


def test_the_compute_section_reaches_the_local_pool() -> None:
    from compute.local import LocalCompute
    from service.compose import compute_from_config

    default = compute_from_config(parse_config(GOOD))
    assert isinstance(default, LocalCompute) and (default.nice, default.pause_for_tick) == (19, True)
    chosen = compute_from_config(
        parse_config({**GOOD, "compute": {"worker_nice": 5, "pause_for_tick": False}})
    )
    assert isinstance(chosen, LocalCompute) and (chosen.nice, chosen.pause_for_tick) == (5, False)
