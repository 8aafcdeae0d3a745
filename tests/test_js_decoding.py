"""The browser runtime's greedy and beam search (runtime/web/decoding.js, run by node) against an
exhaustive search over every label sequence, on the table-driven counterexample of
test_runtime_decoding.py (the one the old shrinking beam got wrong) and a second table.

A small .mjs driver imports decoding.js by its file URL and decodes with a step function that looks
each row's next-token log-probabilities up in a table keyed by the row's label prefix; the expected
answers are computed here, in Python, by enumerating every sequence the rules allow and by a plain
step-by-step argmax, never by the code under test."""
from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess

import numpy as np
import pytest

from conftest import REPO
from corel_annotate.runtime.bundle.decoding_config import DecodingConfig
from test_runtime_decoding import STOP, TABLE, V, A, X, Y, Z

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")
DECODING_JS = REPO / "runtime" / "web" / "decoding.js"

# a second image: greedy takes Y (0.5) then A, the exhaustive search finds Z, stop (0.4 * 0.95)
TABLE2 = {(): {Y: 0.5, Z: 0.4, STOP: 0.05}, (Y,): {A: 0.6, STOP: 0.2}, (Y, A): {STOP: 0.9}, (Z,): {STOP: 0.95}}
# a third: X, X is the best sequence when repeats are allowed, Y when they are not
TABLE3 = {(): {X: 0.6, Y: 0.35, STOP: 0.01}, (X,): {X: 0.9, STOP: 0.05}, (X, X): {STOP: 0.95}, (Y,): {STOP: 0.9}}

DRIVER = """
import { decode } from %(url)s;
import { readFileSync } from "node:fs";

const job = JSON.parse(readFileSync(process.argv[2], "utf8"));
const V = job.V;

// the recurrent "state": each row's label prefix and its image; select() gathers rows like DecoderState
class TableState {
  constructor(prefixes, images) { this.prefixes = prefixes; this.images = images; }
  get numRows() { return this.prefixes.length; }
  select(rows) { return new TableState(rows.map((r) => this.prefixes[r]), rows.map((r) => this.images[r])); }
}

function stepFor(tables, calls) {
  return async (tokens, state) => {
    if (tokens.length !== state.numRows) throw new Error(`${tokens.length} tokens for ${state.numRows} rows`);
    calls.push(tokens.length);
    const prefixes = state.prefixes.map((p, r) => (tokens[r] < V ? [...p, tokens[r]] : p));
    const logp = new Float32Array(tokens.length * (V + 1));
    prefixes.forEach((p, r) => {
      const row = tables[state.images[r]][p.join(",")];
      if (!row) throw new Error(`no table row for prefix [${p}] of image ${state.images[r]}`);
      logp.set(row, r * (V + 1));
    });
    return { logp, state: new TableState(prefixes, state.images), alpha: null, positions: 0 };
  };
}

const out = [];
for (const c of job.cases) {
  const calls = [];
  const start = new TableState(job.tables.map(() => []), job.tables.map((_, i) => i));
  const results = await decode(stepFor(job.tables, calls), start, c, V, "table");
  out.push({ results: results.map((r) => ({ labels: r.labels, scores: r.scores, logprob: r.logprob })), calls });
}
process.stdout.write(JSON.stringify(out));
"""


def logp_row(table: dict, prefix: tuple[int, ...]) -> list[float]:
    """The float32 log-probabilities of the next token after ``prefix``: the rule of
    test_runtime_decoding.table_step (tokens missing from the table share what is left)."""
    dist = table.get(prefix, {})
    rest = max(1e-6, 1.0 - sum(dist.values())) / max(1, V + 1 - len(dist))
    return [float(np.log(np.float32(dist.get(t, rest)))) for t in range(V + 1)]


def js_tables(tables: list[dict], max_len: int) -> list[dict[str, list[float]]]:
    """Every prefix of up to ``max_len`` labels (repeats included) of every image: its log-probability row."""
    return [{",".join(map(str, p)): logp_row(t, p) for n in range(max_len + 1)
             for p in itertools.product(range(V), repeat=n)} for t in tables]


def run_js(tmp_path, tables: list[dict], configs: list[DecodingConfig]) -> list[dict]:
    driver = tmp_path / "driver.mjs"
    driver.write_text(DRIVER % {"url": json.dumps(DECODING_JS.as_uri())})
    job = tmp_path / "job.json"
    max_len = max(c.max_len for c in configs)
    job.write_text(json.dumps({"V": V, "tables": js_tables(tables, max_len), "cases": [c.to_dict() for c in configs]}))
    done = subprocess.run([NODE, "--no-warnings", str(driver), str(job)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sequence_logprob(table: dict, seq: tuple[int, ...]) -> float:
    """Summed float32 log-probabilities of ``seq`` then stop."""
    total, prefix = 0.0, ()
    for t in (*seq, STOP):
        total += logp_row(table, prefix)[t]
        prefix = (*prefix, t)
    return total


def exhaustive(table: dict, config: DecodingConfig) -> tuple[list[int], float]:
    """The best sequence over every one the rules allow (``min_labels``..``max_len`` labels, no repeats
    with ``forbid_repeat``), ranked by summed log-probability / ``normaliser(n + 1)``; asserts it is unique."""
    ranked = []
    for n in range(config.min_labels, config.max_len + 1):
        seqs = itertools.permutations(range(V), n) if config.forbid_repeat else itertools.product(range(V), repeat=n)
        for seq in seqs:
            lp = sequence_logprob(table, seq)
            ranked.append((lp / config.normaliser(n + 1), list(seq), lp))
    ranked.sort(key=lambda r: -r[0])
    assert ranked[0][0] - ranked[1][0] > 1e-6, "the table must have one best sequence"
    return ranked[0][1], ranked[0][2]


def argmax_greedy(table: dict, config: DecodingConfig) -> list[int]:
    """Step by step: the most likely allowed token (ties to the lower token), until stop."""
    seq: list[int] = []
    for t in range(config.max_len + 1):
        row = np.asarray(logp_row(table, tuple(seq)))
        if config.forbid_repeat:
            row[seq] = -math.inf
        if t == config.max_len:
            row[:V] = -math.inf
        if t < config.min_labels:
            row[STOP] = -math.inf
        best = int(np.argmax(row))
        if best == STOP:
            break
        seq.append(best)
    return seq


def assert_result(got: dict, table: dict, labels: list[int]) -> None:
    """Labels in order, each label's score its emission probability, the total log-probability with stop."""
    assert got["labels"] == labels
    probs, prefix = [], ()
    for t in labels:
        probs.append(math.exp(logp_row(table, prefix)[t]))
        prefix = (*prefix, t)
    assert got["scores"] == pytest.approx(probs, abs=1e-6)
    assert got["logprob"] == pytest.approx(sequence_logprob(table, tuple(labels)), abs=1e-6)


CONFIGS = [DecodingConfig(beam_width=200, max_len=3, min_labels=m, forbid_repeat=r, length_penalty=p,
                          length_penalty_formula=f)
           for m in (0, 1) for r in (True, False) for p, f in ((0.0, "n^alpha"), (0.8, "n^alpha"), (1.5, "gnmt"))] + [
    DecodingConfig(beam_width=200, max_len=1, min_labels=1), DecodingConfig(beam_width=200, max_len=2, min_labels=0)]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"len{c.max_len}-min{c.min_labels}-rep{int(not c.forbid_repeat)}-"
                         f"{c.length_penalty}-{c.length_penalty_formula}")
def test_wide_js_beam_equals_exhaustive_search(tmp_path, config):
    """Wider than every live set, the beam is the full search: three images decoded in one batch, each
    equal to the exhaustive best under the rules and the length penalty."""
    tables = [TABLE, TABLE2, TABLE3]
    [case] = run_js(tmp_path, tables, [config])
    for got, table in zip(case["results"], tables):
        assert_result(got, table, exhaustive(table, config)[0])
    assert max(case["calls"]) > 2, "one step call carries the hypotheses of every image"


@pytest.mark.parametrize("min_labels", [0, 1])
def test_js_beam_3_finds_what_greedy_misses(tmp_path, min_labels):
    """On the counterexample greedy follows A, X (0.36 over 0.33) and the tie Z/stop to A, X, Z; beam 3
    (and beam 2, the width the old shrinking beam failed at) find A, Y, the exhaustive best."""
    config = DecodingConfig(beam_width=3, max_len=3, min_labels=min_labels)
    tables = [TABLE, TABLE2]
    greedy, beam3, beam2 = run_js(tmp_path, tables, [config.greedy(), config, config.replace(beam_width=2)])
    for i, table in enumerate(tables):
        best, best_logprob = exhaustive(table, config)
        plain = argmax_greedy(table, config)
        assert plain != best
        assert_result(greedy["results"][i], table, plain)
        assert_result(beam3["results"][i], table, best)
        assert_result(beam2["results"][i], table, best)
        assert greedy["results"][i]["logprob"] < best_logprob - 0.1
    assert greedy["results"][0]["labels"] == [A, X, Z] and beam3["results"][0]["labels"] == [A, Y]
    assert max(greedy["calls"]) <= 2, "greedy steps one row per image"
