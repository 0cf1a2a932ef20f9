"""`powernet bench scale` (docs/feeders.md#cost-growth): every cost it names is measured, positive and
growing with N where it must, the exponent fit recovers a known power law, and the plot is written."""

from __future__ import annotations

import numpy as np

from launch.bench_scale import fit_exponent, plot, run_bench


def test_the_exponent_fit_recovers_a_power_law():
    n = [6, 20, 50, 95, 159]
    assert abs(fit_exponent(n, [3.0 * x**1.1 for x in n]) - 1.1) < 1e-9
    assert abs(fit_exponent(n, [7.0 for _ in n])) < 1e-9


def test_a_small_scale_bench_measures_every_cell_and_plots(tmp_path):
    report = run_bench(["microgrid-6", "microgrid-20"], rounds=1, memory=False, echo=False, budget_s=0.001)
    rows = report["results"]
    assert [r["n_dg"] for r in rows] == [6, 20]
    for row in rows:
        for key in ("sim_ms_e1", "sim_ms_e8", "env_ms_e1", "act_ms_powernet", "act_ms_ia2c",
                    "update_ms_powernet_e1", "update_ms_ia2c_e8", "rollout_bytes_e1", "weights_bytes_ia2c"):
            assert np.isfinite(row[key]) and row[key] > 0, key
    # message sizes are exact, not timed: more agents, more bytes
    assert rows[1]["rollout_bytes_e1"] > 2 * rows[0]["rollout_bytes_e1"]
    assert rows[1]["weights_bytes_powernet"] > rows[0]["weights_bytes_powernet"]
    assert set(report["exponents"]["rollout_bytes_e1"]) == {"all", "n_ge_20"}
    plot(report, tmp_path / "scale.png")
    assert (tmp_path / "scale.png").stat().st_size > 10_000


def test_combining_repeated_runs_keeps_each_costs_median():
    from launch.bench_scale import combine

    def report(created, costs):
        return {"created": created, "machine": {}, "settings": {},
                "results": [{"system": s, "n_dg": n, "n_bus": n, "sim_ms_e1": c}
                            for (s, n), c in zip((("a", 20), ("b", 80)), costs, strict=True)]}

    merged = combine([report("r1", [2.0, 9.0]), report("r2", [3.0, 8.0]), report("r3", [1.0, 12.0])])
    assert [r["sim_ms_e1"] for r in merged["results"]] == [2.0, 9.0]
    assert abs(merged["exponents"]["sim_ms_e1"]["n_ge_20"] - np.log(4.5) / np.log(4.0)) < 1e-3
    bad = report("r3", [1.0, 1.0])
    bad["results"].reverse()
    try:
        combine([report("r1", [2.0, 9.0]), bad])
    except ValueError:
        pass
    else:
        raise AssertionError("reports over different systems must not combine")
