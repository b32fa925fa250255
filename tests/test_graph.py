"""The built-in graph-reachability task (data=graph) and frontier legibility on hand-built thoughts."""

import pytest
import torch
from conftest import needs_shared_data

from coconut.core.errors import ConfigError
from coconut.core.tokenizer import build_tokenizer
from coconut.data.graph import Graph, generate_graph, nodes_needed, parse_graph
from coconut.eval.frontier import frontier_block, node_tokens, question_frontiers
from coconut.eval.steps import step_key


def reachable(graph: Graph) -> set[str]:
    children: dict[str, set[str]] = {}
    for a, b in graph.edges:
        children.setdefault(a, set()).add(b)
    seen, todo = set(), [graph.root]
    while todo:
        node = todo.pop()
        for child in children.get(node, ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


@pytest.mark.parametrize("depth,branches,degree", [(1, 0, 1), (3, 2, 2), (4, 3, 2), (4, 6, 3)])
def test_every_question_has_exactly_one_reachable_candidate_and_a_valid_path(depth, branches, degree):
    records = generate_graph(300, depth=depth, distractor_branches=branches, out_degree=degree, nodes=52, seed=1)
    for record in records:
        graph = parse_graph(record.question)
        assert graph is not None, record.question
        a, b = graph.candidates
        assert (a in reachable(graph)) != (b in reachable(graph))
        assert record.answer in reachable(graph) and record.answer in graph.candidates
        # The steps are the hops of a path from the root to the answer, one edge each.
        hops = [tuple(step.strip().split(" ")) for step in record.steps]
        assert len(hops) == depth and hops[0][0] == graph.root and hops[-1][1] == record.answer
        assert all(hop in graph.edges for hop in hops)
        assert all(x[1] == y[0] for x, y in zip(hops, hops[1:]))
        # The answer is exactly `depth` hops away: the frontier at that depth holds it.
        assert record.answer in graph.frontiers(depth)[depth]
        # Most children of any node: out_degree.
        parents = [p for p, _ in graph.edges]
        assert max(parents.count(p) for p in set(parents)) <= degree


def test_the_decoy_is_shaped_like_the_root_tree():
    """Degrees and depths do not tell the candidates apart: both have one parent, no children, and
    their sources (nodes without parents) are at the same distance."""
    for record in generate_graph(200, depth=3, distractor_branches=2, seed=2):
        graph = parse_graph(record.question)
        children = [b for _, b in graph.edges]
        parents = [a for a, _ in graph.edges]
        for candidate in graph.candidates:
            assert children.count(candidate) == 1 and candidate not in parents
        sources = {a for a in parents if a not in children}
        assert len(sources) == 2 and graph.root in sources


def test_same_seed_same_data_and_the_knobs_do_what_they_say():
    assert generate_graph(50, seed=3) == generate_graph(50, seed=3)
    assert generate_graph(50, seed=3) != generate_graph(50, seed=4)
    few = generate_graph(100, depth=3, distractor_branches=0, seed=0)
    many = generate_graph(100, depth=3, distractor_branches=3, seed=0)
    assert all(len(parse_graph(r.question).edges) == 6 for r in few)  # two bare paths of 3 hops
    assert sum(len(parse_graph(r.question).edges) for r in many) > sum(len(parse_graph(r.question).edges) for r in few)
    small = generate_graph(100, depth=2, distractor_branches=0, nodes=6, seed=0)
    assert set().union(*(parse_graph(r.question).nodes for r in small)) == set("ABCDEF")
    assert all(len(r.steps) == 5 for r in generate_graph(20, depth=5, distractor_branches=1, nodes=52, seed=0))


def test_a_list_of_branch_counts_mixes_graph_sizes():
    # The first path node's chain has 3 edges, the second's 2, the third's 1: one branch adds 1-3
    # edges to each of the two trees.
    mixed = [len(parse_graph(r.question).edges) for r in generate_graph(400, distractor_branches=[0, 1], seed=0)]
    assert set(mixed) <= {6, 8, 10, 12} and 150 < mixed.count(6) < 250  # about half without a branch
    assert generate_graph(50, distractor_branches=[1], seed=3) == generate_graph(50, distractor_branches=1, seed=3)
    with pytest.raises(ConfigError, match="distractor_branches=\\[0, 9\\]"):
        generate_graph(1, distractor_branches=[0, 9])


def test_impossible_knobs_are_one_clear_error():
    with pytest.raises(ConfigError, match="nodes=10"):
        generate_graph(1, depth=3, distractor_branches=2, nodes=10)
    with pytest.raises(ConfigError, match="distractor_branches=4"):
        generate_graph(1, depth=2, distractor_branches=4, out_degree=2, nodes=52)
    assert nodes_needed(3, 2, 2) == 2 * (4 + 3 + 2)


def test_node_names_are_one_token_each_and_hops_key_on_the_node_reached():
    records = generate_graph(500, seed=0)
    tokenizer = build_tokenizer([r.question + "\n" + "\n".join(r.steps) + "\n### " + r.answer for r in records], 384)
    assert all(len(tokenizer.encode(" " + n)) == 1 for n in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert all(step_key(step) == step.split()[-1] for r in records for step in r.steps)
    assert step_key("A F") == "F" and step_key("a f") == "f"  # case kept: A and a are different nodes
    assert step_key("A > F") == "F"  # the format before, in files written then
    assert step_key("0 6") == "06"  # two digits are a partial product, not a hop


# -- frontier legibility on hand-built thoughts -----------------------------------------------------
def hand_built():
    """root R -> A, B; A -> C; B -> D; decoy S -> E -> F; embeddings: one random vector per node."""
    graph = Graph(edges=(("R", "A"), ("R", "B"), ("A", "C"), ("B", "D"), ("S", "E"), ("E", "F")), root="R",
                  candidates=("C", "F"))  # fmt: skip
    names = graph.nodes
    ids = {i: n for i, n in enumerate(names)}  # token i writes node names[i]; more tokens follow
    embeddings = torch.randn(len(names) + 40, 256, generator=torch.Generator().manual_seed(0))
    return graph, names, ids, embeddings


def test_a_thought_holding_the_frontier_scores_one_and_a_random_one_scores_chance():
    graph, names, ids, embeddings = hand_built()
    frontier_1 = embeddings[[names.index("A"), names.index("B")]].mean(0)  # depth 1: {A, B}
    frontier_2 = embeddings[[names.index("C"), names.index("D")]].mean(0)  # depth 2: {C, D}
    thoughts = torch.stack([frontier_1, frontier_2])
    scores = question_frontiers(thoughts @ embeddings.T, graph, steps_replaced=2, latents_per_step=1, ids=ids)
    assert [s.depth for s in scores] == [1, 2]
    assert all(s.topk == 1.0 and s.topk_within == 1.0 and s.mass > 0.9 for s in scores)
    assert scores[0].topk_chance == pytest.approx(2 / 8)  # 2 of the 8 nodes

    # Random thoughts: over many draws, top-k share and mass sit at chance (|F| / |N| = 0.25).
    generator = torch.Generator().manual_seed(1)
    randoms = []
    for _ in range(400):
        logits = torch.randn(2, len(names) + 40, generator=generator) * 0.1
        randoms += question_frontiers(logits, graph, steps_replaced=2, latents_per_step=1, ids=ids)
    block = frontier_block(randoms)
    assert block["frontier_mass"] == pytest.approx(0.25, abs=0.02)
    # top-k over the whole vocabulary: a random token names a node of the graph 8 / 48 of the time
    assert block["frontier_topk"] == pytest.approx(2 / 48, abs=0.02)
    assert block["frontier_topk_chance"] == pytest.approx(0.25)


def test_with_two_thoughts_a_hop_the_place_holding_the_frontier_is_reported():
    # Without markers a hop's thoughts replace " D U\n": the first can keep the parent, the second the frontier.
    graph, names, ids, embeddings = hand_built()
    root = embeddings[names.index("R")]
    frontier_1 = embeddings[[names.index("A"), names.index("B")]].mean(0)
    frontier_2 = embeddings[[names.index("C"), names.index("D")]].mean(0)
    thoughts = torch.stack([root, frontier_1, frontier_1, frontier_2])  # hop 1: R, {A, B}; hop 2: {A, B}, {C, D}
    scores = question_frontiers(thoughts @ embeddings.T, graph, steps_replaced=2, latents_per_step=2, ids=ids)
    assert [(s.depth, s.position, s.topk) for s in scores] == [(1, 1, 0.0), (1, 2, 1.0), (2, 1, 0.0), (2, 2, 1.0)]
    block = frontier_block(scores)
    assert block["frontier_topk"] == 0.5  # every thought of a hop against the hop's frontier
    assert block["frontier_by_position"]["2"]["topk"] == 1.0 and block["frontier_by_position"]["1"]["topk"] == 0.0
    assert block["frontier_topk_best_position"] == 1.0
    assert block["frontier_topk_best_position_chance"] == pytest.approx(2 / 8)
    assert "frontier_by_position" not in frontier_block([s for s in scores if s.position == 2])  # one per hop


def test_a_thought_searching_from_the_decoy_root_counts_off_tree():
    graph, names, ids, embeddings = hand_built()
    assert graph.unreachable == {"S", "E", "F"}
    decoy_1 = embeddings[names.index("E")]  # depth 1 of the decoy tree S -> E -> F
    frontier_2 = embeddings[[names.index("C"), names.index("D")]].mean(0)
    scores = question_frontiers(
        torch.stack([decoy_1, frontier_2]) @ embeddings.T, graph, steps_replaced=2, latents_per_step=1, ids=ids
    )
    assert [(s.topk, s.off_tree) for s in scores] == [(0.0, 1.0), (1.0, 0.0)]
    block = frontier_block(scores)
    assert block["frontier_off_tree"] == 0.5
    assert block["frontier_off_tree_chance"] == pytest.approx(3 / 8)  # S, E, F of the 8 nodes
    assert block["frontier_by_depth"]["1"]["off_tree"] == 1.0


def test_latents_per_step_map_thoughts_to_depths_and_node_tokens_cover_both_spellings():
    graph, names, ids, embeddings = hand_built()
    logits = torch.randn(4, len(names) + 40)
    scores = question_frontiers(logits, graph, steps_replaced=2, latents_per_step=2, ids=ids)
    assert [s.depth for s in scores] == [1, 1, 2, 2]
    records = generate_graph(300, seed=0)
    tokenizer = build_tokenizer([r.question + "\n" + "\n".join(r.steps) for r in records], 384)
    mapped = node_tokens(tokenizer, ["A"])
    assert set(mapped.values()) == {"A"} and len(mapped) == 2  # " A" and "A" (a step's first node)


# -- end to end: a graph run reports frontier legibility --------------------------------------------
@pytest.mark.parametrize("preset, thoughts_per_hop", [("graph_coconut", 3), ("graph_coconut_frontier", 2)])
def test_a_tiny_graph_run_reports_frontier_legibility_in_tensorboard_and_the_report(tmp_path, preset, thoughts_per_hop):
    import json

    from conftest import scalars, tiny_cfg
    from hydra import compose, initialize_config_dir
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from coconut import CONFIG_DIR
    from coconut.commands.evaluate import run_evaluation
    from coconut.commands.train import train

    run = tmp_path / "run"
    overrides = [f"experiment={preset}", "debug=fast", "trainer.max_epochs=2", "test=false"]
    # Stage 0 then stage 1 in one run (the preset starts at stage 1 from a graph_stage0 run).
    overrides += ["curriculum.start_stage=0", "curriculum.epochs_first_stage=1", "curriculum.epochs_per_stage=1"]
    train(tiny_cfg(run, *overrides))
    tags = scalars(run)
    assert "val/legibility/frontier_topk" in tags and "val/legibility/frontier_mass_chance" in tags
    assert ("train/legibility_loss" in tags) == (preset == "graph_coconut_frontier")  # the frontier objective
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    table = events.Tensors("thoughts/top_tokens/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "frontier at its depth" in table
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="eval", overrides=[f"paths.output_dir={tmp_path / 'eval'}",
                                                     f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])  # fmt: skip
    report = run_evaluation(cfg)
    legibility = report["legibility"]
    for key in ("frontier_topk", "frontier_topk_within", "frontier_mass", "frontier_topk_chance"):
        assert 0.0 <= legibility[key] <= 1.0, key
    assert set(legibility["frontier_by_depth"]) == {"1"}  # stage 1: the first hop's thoughts
    assert "frontier_topk" in (tmp_path / "eval" / "report.md").read_text()
    row = json.loads((tmp_path / "eval" / "samples.jsonl").read_text().splitlines()[0])
    assert [f["depth"] for f in row["frontier"]] == [1] * thoughts_per_hop
    assert [f["position"] for f in row["frontier"]] == list(range(1, thoughts_per_hop + 1))
    assert 0.0 <= legibility["frontier_topk_best_position"] <= 1.0  # both presets: several thoughts a hop


def test_the_verdict_line_reads_the_swap_ablation():
    from coconut.eval.report import thoughts_verdict

    report = {"accuracy": 0.8, "tokens": {"thoughts_mean": 3.0}, "legibility": {"ablation_drop": {"other": 0.35}}}
    assert thoughts_verdict(report).startswith("thoughts carried the answer: yes")
    report["legibility"]["ablation_drop"]["other"] = 0.05
    assert thoughts_verdict(report).startswith("thoughts carried the answer: no:")
    assert "no thoughts" in thoughts_verdict({"accuracy": 0.8, "tokens": {"thoughts_mean": 0.0}, "legibility": {}})


@needs_shared_data
def test_prosqa_questions_parse_to_their_own_graphs():
    """Every question of the real ProsQA file parses to exactly the graph its JSON lists, and each
    reference step reaches a node of the frontier at its depth."""
    import json

    from conftest import SHARED_DATA

    raw = json.loads((SHARED_DATA / "prosqa" / "prosqa_valid.json").read_text())
    for record in raw:
        graph = parse_graph(record["question"])
        names = record["idx_to_symbol"]
        assert set(graph.edges) == {(names[a], names[b]) for a, b in record["edges"]}
        assert graph.root == names[record["root"]]
        assert set(graph.candidates) == {names[record["target"]], names[record["neg_target"]]}
        frontiers = graph.frontiers(len(record["steps"]))
        assert all(step_key(step) in frontiers[i + 1] for i, step in enumerate(record["steps"]))


def test_written_hops_are_valid_when_they_follow_edges_from_where_the_search_stands():
    from coconut.eval.frontier import hops_valid

    graph = parse_graph(" A B , B C , A D , D E , X Y . From A , which is reachable : E or Y ?")
    # The reference goes A D E; a chain down the other branch is valid too, hop by hop.
    assert hops_valid(graph, [" A B", " B C"]) == [True, True]
    assert hops_valid(graph, ["A D", "D E"]) == [True, True]
    # Not an edge; an edge that does not continue the chain; a hop after the thoughts reached D.
    assert hops_valid(graph, ["A E", "X Y", "D E"]) == [False, False, False]
    assert hops_valid(graph, ["D E"], start="D") == [True]
    assert hops_valid(graph, ["A"]) == [False]
