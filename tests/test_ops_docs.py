"""The README's production, alerts and runbook sections: every runbook_url anchor
lands on a runbook heading, links resolve, examples parse."""

from __future__ import annotations

import re

import yaml

from tests.test_ops_metrics import REPO, alert_rules

README = REPO / "README.md"
RUNBOOK_PREFIX = (
    "https://github.com/binance-futures-exporter/binance-futures-exporter/blob/main/README.md#"
)


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[`*_]{1,2}(?=\S)|(?<=\S)[`*_]{1,2}", "", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def headings(markdown: str) -> list[tuple[int, str]]:
    """(level, text) of every ATX heading outside fenced code blocks."""
    found: list[tuple[int, str]] = []
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if match and not fenced:
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(markdown: str) -> list[str]:
    """Anchors in document order, with GitHub's -1, -2 suffixes for repeats."""
    seen: dict[str, int] = {}
    result: list[str] = []
    for _, text in headings(markdown):
        anchor = github_anchor(text)
        if anchor in seen:
            seen[anchor] += 1
            anchor = f"{anchor}-{seen[anchor]}"
        else:
            seen[anchor] = 0
        result.append(anchor)
    return result


def runbook_headings(markdown: str) -> list[str]:
    """Texts of the ### headings inside '## Runbook'."""
    inside = False
    found: list[str] = []
    for level, text in headings(markdown):
        if level == 2:
            inside = text == "Runbook"
        elif level == 3 and inside:
            found.append(text)
    return found


def runbook_anchors_of_rules() -> dict[str, str]:
    result: dict[str, str] = {}
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        assert url.startswith(RUNBOOK_PREFIX), url
        result[rule["alert"]] = url[len(RUNBOOK_PREFIX):]
    return result


def operations() -> str:
    return README.read_text(encoding="utf-8")


def test_github_anchor() -> None:
    assert github_anchor("BinanceFuturesIPBanned") == "binancefuturesipbanned"
    assert github_anchor("More accounts than one IP can carry") == (
        "more-accounts-than-one-ip-can-carry")
    assert github_anchor("Dashboard and alerts") == "dashboard-and-alerts"
    assert github_anchor("`--check-config`: what, why?") == "--check-config-what-why"


def test_sections() -> None:
    level_two = [text for level, text in headings(operations()) if level == 2]
    start = level_two.index("Running in production")
    assert level_two[start:start + 3] == ["Running in production", "Dashboard and alerts",
                                          "Runbook"]


def test_one_runbook_heading_per_alert_matching_runbook_urls() -> None:
    expected = runbook_anchors_of_rules()
    runbook = [github_anchor(text) for text in runbook_headings(operations())]
    assert sorted(runbook) == sorted(expected.values())
    assert len(set(runbook)) == len(runbook)
    # Unique in the whole document too, so GitHub adds no -1 suffix.
    all_anchors = anchors(operations())
    for alert, anchor in expected.items():
        assert all_anchors.count(anchor) == 1, f"{alert}: anchor {anchor} not unique"


def test_internal_links_resolve() -> None:
    text = operations()
    known = set(anchors(text))
    for target in re.findall(r"\]\(#([^)]+)\)", text):
        assert target in known, f"link to #{target} has no heading"


def test_linked_repository_files_exist() -> None:
    for target in re.findall(r"\]\(((?!https?:|#|<)[^)\s]+)\)", operations()):
        assert (REPO / target).exists(), f"link to {target}: no such file in the repository"


def test_every_alert_is_in_the_alert_table() -> None:
    text = operations()
    section = text[text.index("## Dashboard and alerts"):text.index("## Runbook")]
    for rule in alert_rules():
        assert f"`{rule['alert']}`" in section, f"{rule['alert']} missing from the alerts table"


def test_yaml_examples_parse() -> None:
    blocks = re.findall(r"```yaml\n(.*?)```", operations(), re.S)
    assert len(blocks) >= 4
    kinds: set[str] = set()
    for block in blocks:
        for document in yaml.safe_load_all(block):
            assert document is not None
            if isinstance(document, dict) and "kind" in document:
                kinds.add(document["kind"])
    assert {"Deployment", "Service", "Secret", "ServiceMonitor"} <= kinds


def test_kubernetes_example_conventions() -> None:
    documents = [d for block in re.findall(r"```yaml\n(.*?)```", operations(), re.S)
                 for d in yaml.safe_load_all(block) if isinstance(d, dict) and "kind" in d]
    by_kind = {d["kind"]: d for d in documents}
    pod = by_kind["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    secret_volumes = [v["name"] for v in pod["volumes"] if "secret" in v]
    assert secret_volumes and all(mounts[name]["readOnly"] is True for name in secret_volumes)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    annotations = by_kind["Service"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "10317"
    endpoint = by_kind["ServiceMonitor"]["spec"]["endpoints"][0]
    assert endpoint["port"] == container["ports"][0]["name"]
    assert "/metrics" not in str(container.get("livenessProbe"))
