"""The rule planner: every real RSVQA-HR question plans, golden programs, paraphrases,
out-of-grammar refusals, determinism, and the planner factory."""

from __future__ import annotations

import ast
import json
from collections import Counter

import pytest

from tests.conftest import DATA
from viper_rs import tools
from viper_rs.core.errors import ConfigError, PlanningError
from viper_rs.planning import PLANNER_NAMES, Plan, Planner, RulePlanner, build_planner
from viper_rs.planning.rules import TEMPLATES, answer_tool, pluralise_identifier

QUESTIONS = DATA / "rsvqa_hr_mini" / "USGS_split_mini_questions.json"
KIND_OF_TYPE = {"presence": "presence", "count": "count", "area": "area", "comp": "comparison"}

#: Every concept the 2,501 mini questions name, in the singular form find() receives.
RSVQA_MINI_NOUNS = {
    "allotment", "building", "cemetery", "commercial area", "commercial building",
    "construction area", "depot", "farmland", "farmyard", "forest", "garage", "garden",
    "grass area", "greenfield", "hospital", "industrial area", "landfill", "meadow",
    "military area", "orchard", "park", "parking", "pedestrian", "place of worship", "port",
    "railway", "recreation ground", "religious area", "residential area",
    "residential building", "road", "salt pond", "school", "theatre", "vineyard",
    "water area", "wood",
}


@pytest.fixture(scope="module")
def planner() -> RulePlanner:
    return RulePlanner()


@pytest.fixture(scope="module")
def mini_questions() -> list[dict]:
    """The 2,501 real RSVQA-HR mini questions (skipped when ../shared/data is absent)."""
    if not QUESTIONS.is_file():
        pytest.skip(f"real RSVQA-HR questions {QUESTIONS} are absent (the data folder sits beside the clone)")
    return json.loads(QUESTIONS.read_text())["questions"]


def check_program(program: str) -> list[str]:
    """Assert the program is one ``execute_command(image)`` calling only registered tools by
    name, using only names it defines; return the called tool names in order."""
    registered = set(tools.REGISTRY.names())
    tree = ast.parse(program)
    assert len(tree.body) == 1 and isinstance(tree.body[0], ast.FunctionDef)
    func = tree.body[0]
    assert func.name == "execute_command"
    assert [a.arg for a in func.args.args] == ["image"]
    assert isinstance(func.body[-1], ast.Return)
    assigned = {t.id for node in ast.walk(func) if isinstance(node, ast.Assign) for t in node.targets}
    called = []
    for node in ast.walk(func):
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name), ast.dump(node)
            assert node.func.id in registered, node.func.id
            called.append(node.func.id)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            assert node.id in registered or node.id in assigned, node.id
    assert not assigned & registered, "a variable shadows a tool"
    return called


# --------------------------------------------------------------------------- real questions


@pytest.mark.data
def test_every_mini_question_plans(planner, mini_questions):
    assert len(mini_questions) == 2501
    kinds: Counter[str] = Counter()
    nouns: set[str] = set()
    for q in mini_questions:
        plan = planner.plan(q["question"])
        assert plan.kind == KIND_OF_TYPE[q["type"]], q
        assert plan.planner == "rules"
        assert plan.parsed is not None and plan.parsed["type"] == plan.kind
        assert plan.notes
        called = check_program(plan.program)
        assert called[-1] == {"presence": "exists", "count": "count", "area": "area",
                              "comparison": "compare"}[plan.kind]
        for slot in ("subject", "second_subject"):
            target = plan.parsed[slot]
            if target:
                nouns.add(target["noun"])
                if target["object"]:
                    nouns.add(target["object"]["noun"])
        kinds[plan.kind] += 1
    assert kinds == {"comparison": 843, "count": 663, "presence": 642, "area": 353}
    assert nouns == RSVQA_MINI_NOUNS


@pytest.mark.data
def test_covers_every_mini_question(planner, mini_questions):
    assert all(planner.covers(q["question"]) for q in mini_questions)


@pytest.mark.data
def test_mini_plans_are_deterministic(mini_questions):
    first, second = RulePlanner(), RulePlanner()
    for q in mini_questions[::7]:
        a, b = first.plan(q["question"]), second.plan(q["question"])
        assert a.program == b.program and a.parsed == b.parsed and a.notes == b.notes


# --------------------------------------------------------------------------- golden programs

GOLDEN = {
    "Is a residential building present?": '''\
def execute_command(image):
    residential_buildings = find("residential building")
    return exists(residential_buildings)
''',
    "How many roads on the left of a  small residential area are there in the image?": '''\
def execute_command(image):
    roads = find("road")
    residential_areas = find("residential area")
    small_residential_areas = filter_size(residential_areas, "small")
    roads_left_of_small_residential_areas = left_of(roads, small_residential_areas)
    return count(roads_left_of_small_residential_areas)
''',
    "Are there more buildings on the left of the  park than commercial buildings?": '''\
def execute_command(image):
    buildings = find("building")
    parks = find("park")
    buildings_left_of_parks = left_of(buildings, parks)
    commercial_buildings = find("commercial building")
    return compare(buildings_left_of_parks, commercial_buildings, "more")
''',
    "Are there less medium meadows than buildings in the image?": '''\
def execute_command(image):
    meadows = find("meadow")
    medium_meadows = filter_size(meadows, "medium")
    buildings = find("building")
    return compare(medium_meadows, buildings, "less")
''',
    "Is the number of square place of worships equal to the number of small parkings?": '''\
def execute_command(image):
    places_of_worship = find("place of worship")
    square_places_of_worship = filter_shape(places_of_worship, "square")
    parkings = find("parking")
    small_parkings = filter_size(parkings, "small")
    return compare(square_places_of_worship, small_parkings, "equal")
''',
    "What is the area covered by circular commercial buildings?": '''\
def execute_command(image):
    commercial_buildings = find("commercial building")
    circular_commercial_buildings = filter_shape(commercial_buildings, "circular")
    return area(circular_commercial_buildings)
''',
    "Is a building next to the  residential area present?": '''\
def execute_command(image):
    buildings = find("building")
    residential_areas = find("residential area")
    buildings_next_to_residential_areas = next_to(buildings, residential_areas)
    return exists(buildings_next_to_residential_areas)
''',
    # size and shape on both sides of a relation (not in the mini split, allowed by the grammar)
    "Is there a large rectangular parking at the top of a small square building?": '''\
def execute_command(image):
    parkings = find("parking")
    large_parkings = filter_size(parkings, "large")
    large_rectangular_parkings = filter_shape(large_parkings, "rectangular")
    buildings = find("building")
    small_buildings = filter_size(buildings, "small")
    small_square_buildings = filter_shape(small_buildings, "square")
    large_rectangular_parkings_above_small_square_buildings = above(large_rectangular_parkings, small_square_buildings)
    return exists(large_rectangular_parkings_above_small_square_buildings)
''',
    "What is the amount of woods at the bottom of the  large pedestrian?": '''\
def execute_command(image):
    woods = find("wood")
    pedestrians = find("pedestrian")
    large_pedestrians = filter_size(pedestrians, "large")
    woods_below_large_pedestrians = below(woods, large_pedestrians)
    return count(woods_below_large_pedestrians)
''',
    # the same concept on both sides: found once, reused
    "Are there more small buildings than buildings on the right of a road?": '''\
def execute_command(image):
    buildings = find("building")
    small_buildings = filter_size(buildings, "small")
    roads = find("road")
    buildings_right_of_roads = right_of(buildings, roads)
    return compare(small_buildings, buildings_right_of_roads, "more")
''',
}


@pytest.mark.parametrize("question", list(GOLDEN))
def test_golden_programs(planner, question):
    plan = planner.plan(question)
    assert plan.program == GOLDEN[question]
    check_program(plan.program)


def test_parse_records_relation_size_shape_and_second_subject(planner):
    plan = planner.plan("Are there less rectangular parkings next to the  large water area than roads?")
    assert plan.kind == "comparison"
    parsed = plan.parsed
    assert parsed["type"] == "comparison" and parsed["op"] == "less"
    subject = parsed["subject"]
    assert subject["phrase"] == "rectangular parkings"
    assert (subject["noun"], subject["size"], subject["shape"]) == ("parking", None, "rectangular")
    assert (subject["relation"], subject["relation_phrase"]) == ("next_to", "next to")
    assert subject["object"] == {"phrase": "the large water area", "noun": "water area",
                                 "size": "large", "shape": None}
    assert parsed["second_subject"]["noun"] == "road"
    assert parsed["second_subject"]["relation"] is None
    assert any("rectangular parking next_to large water area less than road" in n for n in plan.notes)
    json.dumps(plan.to_dict())  # plain data


@pytest.mark.parametrize(
    ("question", "kind", "op"),
    [
        ("Are there more water areas than roads?", "comparison", "more"),
        ("Are there less roads than square commercial buildings?", "comparison", "less"),
        ("Is the number of buildings equal to the number of roads?", "comparison", "equal"),
        ("Are there fewer parks than roads?", "comparison", "less"),
        ("Is the number of parks the same as the number of roads?", "comparison", "equal"),
        ("Are there as many parks as roads?", "comparison", "equal"),
        ("Is the number of parks greater than the number of roads?", "comparison", "more"),
        ("What is the number of parks?", "count", None),
        ("What is the amount of garages?", "count", None),
        ("How many medium buildings are there?", "count", None),
        ("What is the area covered by allotments?", "area", None),
        ("Is there a place of worship?", "presence", None),
        ("Is a port present?", "presence", None),
    ],
)
def test_question_forms(planner, question, kind, op):
    plan = planner.plan(question)
    assert (plan.kind, plan.parsed["op"]) == (kind, op)


def test_every_template_example_plans_with_its_template(planner):
    for template in TEMPLATES:
        plan = planner.plan(template.example)
        assert plan.parsed["template"] == template.id, template.id
        assert plan.kind == template.kind
        check_program(plan.program)


# --------------------------------------------------------------------------- robustness

PARAPHRASES = {
    "How many residential buildings are there?": [
        "how many residential buildings are there?",
        "HOW MANY RESIDENTIAL BUILDINGS ARE THERE?",
        "How many residential buildings are there",
        "  How   many residential  buildings are there ?  ",
        "How many residential buildings are there in the image?",
        "How many residential buildings are there in the image",
        "How many residential buildings are in the image?",
        "What is the number of residential buildings?",
        "What is the amount of residential buildings?",
        "How many residential building are there?",
    ],
    "Is there a building on the left of a road?": [
        "is there a building on the left of a  road",
        "Is a building on the left of a road present?",
        "Is there a building on the left of the road in the image?",
        "Is there a building to the left of a road?",
        "Is there a building left of a road?",
        "Are there buildings on the left of roads?",
        "Is there a Building On The Left Of A Road???",
    ],
    "Is there a small circular water area?": [
        "Is there a circular small water area?",
        "Is a small circular water area present in the image?",
        "Is there a small round water area?",
    ],
    "How many theatres are there?": ["How many theaters are there?", "How many theatre are there?"],
    "Are there less places of worship than roads?": [
        "Are there less place of worships than roads?",
        "Are there fewer places of worship than roads in the image?",
    ],
}


@pytest.mark.parametrize(
    ("canonical", "variant"), [(c, v) for c, vs in PARAPHRASES.items() for v in vs]
)
def test_paraphrases_give_the_same_program(planner, canonical, variant):
    assert planner.plan(variant).program == planner.plan(canonical).program


OUT_OF_GRAMMAR = [
    "What colour is the car?",
    "What color is the roof?",
    "Describe the image",
    "Is there a building and a road?",
    "Are there buildings or roads?",
    "Is there a building with a pool?",
    "Is there a building next to a road on the left of a park?",
    "How many buildings are there on the left of a road?",
    "Are there more buildings?",
    "How many cars are red?",
    "Where is the road?",
    "Is it sunny?",
    "Is there anything?",
    "Is there a square?",
    "Is there a small large building?",
    "Is there no building?",
    "Is there a 3 building?",
    "How many?",
    "What is the area covered by?",
    "Is there a building on the left of?",
    "",
    "   ?",
]


@pytest.mark.parametrize("question", OUT_OF_GRAMMAR)
def test_out_of_grammar_raises(planner, question):
    assert not planner.covers(question)
    with pytest.raises(PlanningError) as info:
        planner.plan(question)
    message = str(info.value)
    assert message.startswith("cannot plan:")
    assert "outside the RSVQA-HR question grammar" in message
    assert "LLM planner" in message
    assert info.value.to_dict()["type"] == "planning"


def test_determinism_same_question_same_bytes():
    q = "Is the number of small square residential buildings equal to the number of roads next to a park?"
    programs = {RulePlanner().plan(q).program for _ in range(5)}
    assert len(programs) == 1


def test_colliding_variable_names_are_kept_apart(planner):
    plan = planner.plan("Are there more commercial/retail areas than commercial retail areas?")
    assert 'find("commercial/retail area")' in plan.program
    assert 'find("commercial retail area")' in plan.program
    assert "commercial_retail_areas_2" in plan.program
    check_program(plan.program)


# --------------------------------------------------------------------------- identifiers
# (the singular of question nouns is tested in tests/test_vocabulary.py)


def test_identifiers_are_readable_plurals():
    assert pluralise_identifier("place of worship") == "places_of_worship"
    assert pluralise_identifier("cemetery") == "cemeteries"
    assert pluralise_identifier("commercial/retail area") == "commercial_retail_areas"
    assert pluralise_identifier("grass") == "grass"
    assert pluralise_identifier("exist") == "exists_regions"  # never shadows a tool


# --------------------------------------------------------------------------- factory


def test_emitted_tools_are_registered(planner):
    """Every name a rule-planned program calls is a registered tool (the registry is the one
    list of tool names); each question kind is answered by the tool whose kind it is."""
    called = set()
    for template in TEMPLATES:
        for q in (template.example, template.example.replace("buildings", "small buildings "
                                                              "at the left of a road")):
            tree = ast.parse(planner.plan(q).program)
            called |= {n.func.id for n in ast.walk(tree)
                       if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    assert called <= set(tools.REGISTRY.names())
    assert {"find", "filter_size", "left_of", "exists", "count", "area", "compare"} <= called
    assert [answer_tool(k) for k in ("presence", "count", "area", "comparison")] == [
        "exists", "count", "area", "compare"]
    with pytest.raises(PlanningError):
        answer_tool("colour")


@pytest.mark.parametrize("name", ["rules", "auto", "RULES", " Auto "])
def test_build_planner_rules(name):
    planner = build_planner(name)
    assert isinstance(planner, RulePlanner) and isinstance(planner, Planner)
    assert planner.name == "rules"
    assert isinstance(planner.plan("Is there a road?"), Plan)


def test_build_planner_llm_not_configured():
    with pytest.raises(ConfigError, match="LLM planner not configured: pass --llm-base-url and --llm-model"):
        build_planner("llm")


def test_build_planner_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        build_planner("oracle")
    for name in PLANNER_NAMES:
        assert name in str(info.value)
