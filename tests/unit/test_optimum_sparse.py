"""The least busiest-worker utilisation (``optimum.min_max_utilisation``, which ``plan``'s
overload warning prints) is an LP over sparse rows: its memory grows with the edges, not with
rows x edges (10,000 sources of paper-bert took over 24 GB dense)."""

from __future__ import annotations

import numpy as np
from scipy import sparse

from agent.policies.model import (compile_network, edge_flows, node_rates, remaining_for,
                                   uniform_routing)
from agent.policies.optimum import _program, min_max_utilisation
from agent.scenario.paper import paper_scenario


def test_constraint_rows_hold_at_most_two_entries_per_edge_and_one_per_link():
    """Conservation rows: an edge's sender (1) and, when it forwards, its receiver (-I_h);
    utilisation rows: the edge's receiver, and under shared links the link's own row."""
    sc = paper_scenario("paper-bert", num_sources=400, num_samples=200)
    for link_model in ("delay", "shared"):
        net = compile_network(sc, link_model)
        rem, _ = remaining_for(sc, {h: 0.8 for h, st in enumerate(sc.stages, 1) if st.exit})
        a_eq, _, a_in, _, _, _ = _program(net, rem)
        assert sparse.issparse(a_eq) and sparse.issparse(a_in)
        assert a_eq.nnz <= 2 * net.num_edges
        assert a_in.nnz <= (2 if link_model == "shared" else 1) * net.num_edges


def test_least_utilisation_of_a_large_network_is_found_and_no_routing_beats_it():
    """On 2,000 sources the LP answers, finite and positive, with flows that conserve each
    source's rate; the uniform routing's busiest worker is at least as busy."""
    sc = paper_scenario("paper-bert", num_sources=2000, num_samples=200)
    net = compile_network(sc)
    rem, _ = remaining_for(sc, {h: 0.8 for h, st in enumerate(sc.stages, 1) if st.exit})
    best, flows = min_max_utilisation(net, rem)
    assert np.isfinite(best) and best > 0
    out = np.bincount(net.edge_src, weights=flows, minlength=len(net.ids))
    src = net.offloaders[net.stage[net.offloaders] == 0]
    assert np.allclose(out[src], net.source_rate[src], rtol=1e-6)
    a_eq, _, a_in, scale, workers, _ = _program(net, rem)
    p0 = uniform_routing(net)
    x0 = edge_flows(net, p0, node_rates(net, p0, rem), rem)
    assert (a_in @ (x0 / scale)).max() >= best * (1 - 1e-6)
