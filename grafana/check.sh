#!/usr/bin/env bash
# Static checks of the Grafana dashboards: each JSON file parses, is wired to the
# DS_PROMETHEUS input, has the queue and type variables, and every query (panels, panels in
# rows, variable queries) is valid PromQL. promtool is the PromQL parser: the queries, with
# Grafana's variables replaced, become recording rules in a temporary file it checks.
#
# Needs python3 and promtool (Debian: apt-get install prometheus). Whether the queries
# return data from the real exporter is tests/it/dashboard.rs' job.
set -euo pipefail
cd "$(dirname "$0")"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

for dashboard in dashboards/*.json; do
  python3 - "$dashboard" "$tmp/rules.yml" <<'PY'
import json
import re
import sys

path, out = sys.argv[1], sys.argv[2]
problems = []
DS = "${DS_PROMETHEUS}"

# The values tests/it/dashboard.rs uses too: "all" for the variables, a window that holds
# several samples for the range variables.
SUBSTITUTIONS = [
    (r"\$\{?(queue|type)\}?", ".*"),
    (r"\$\{?__(rate_interval|interval|range)\}?", "1m"),
]


def substitute(expr):
    for pattern, value in SUBSTITUTIONS:
        expr = re.sub(pattern, value, expr)
    return expr


with open(path, encoding="utf-8") as f:
    dash = json.load(f)

if dash.get("uid") != "stevedore":
    problems.append(f"uid is {dash.get('uid')!r}, expected 'stevedore'")
if not any(i.get("name") == "DS_PROMETHEUS" and i.get("pluginId") == "prometheus"
           for i in dash.get("__inputs", [])):
    problems.append("no DS_PROMETHEUS prometheus entry in __inputs")


def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))


rules = []
names = {}  # record name -> where the query is, for promtool's errors
ids = set()
charts = 0
for p in panels(dash.get("panels", [])):
    title = p.get("title", "?")
    if p.get("id") in ids:
        problems.append(f"panel id {p.get('id')} is used twice")
    ids.add(p.get("id"))
    if p.get("type") == "row":
        continue
    charts += 1
    targets = p.get("targets", [])
    if not targets:
        problems.append(f"panel {title!r} has no query")
    for where, ds in [("panel", p.get("datasource"))] + [
        (f"query {t.get('refId')}", t.get("datasource")) for t in targets
    ]:
        if ds != {"type": "prometheus", "uid": DS}:
            problems.append(f"panel {title!r}, {where}: data source {ds!r}, not {DS}")
    for t in targets:
        expr = substitute(t.get("expr", ""))
        if not expr.strip() or "$" in expr:
            problems.append(f"panel {title!r} query {t.get('refId')}: unexpected {t.get('expr')!r}")
            continue
        record = f"dashboard:panel_{p['id']}_{t['refId']}"
        rules.append({"record": record, "expr": expr})
        names[record] = f"panel {title!r} query {t['refId']}"

variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
for name in ("queue", "type"):
    v = variables.get(name)
    if v is None:
        problems.append(f"no template variable {name!r}")
        continue
    if not (v.get("multi") and v.get("includeAll") and v.get("allValue") == ".*"):
        problems.append(f"variable {name!r} must be multi-value with All = '.*'")
    query = v.get("query")
    query = query.get("query", "") if isinstance(query, dict) else query or ""
    m = re.fullmatch(r"\s*label_values\((.+),\s*(\w+)\)\s*", query)
    if not m or m.group(2) != name:
        problems.append(f"variable {name!r}: expected label_values(<selector>, {name}), got {query!r}")
        continue
    record = f"dashboard:variable_{name}"
    rules.append({"record": record, "expr": substitute(m.group(1))})
    names[record] = f"variable {name!r}"

if problems:
    print(f"{path}:", *problems, sep="\n  ", file=sys.stderr)
    sys.exit(1)
# JSON is YAML: promtool reads this as a rules file.
with open(out, "w", encoding="utf-8") as f:
    json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f, indent=1)
with open(out + ".names", "w", encoding="utf-8") as f:
    f.writelines(f"  {record}: {where}\n" for record, where in names.items())
print(f"{path}: {len(rules)} queries from {charts} panels and the variables")
PY
  if ! promtool check rules "$tmp/rules.yml"; then
    echo "in $dashboard, the rules above are:" >&2
    cat "$tmp/rules.yml.names" >&2
    exit 1
  fi
done
