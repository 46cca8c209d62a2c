"""Writes the labelled critic cases in this folder: personas.jsonl, conversations.jsonl and
labels.jsonl (run it after editing a case: `.venv/bin/python tests/data/critique/build_cases.py`).

Four base personas (a woman in a large French city, a man in a Ghanaian village, a
non-binary designer in a mid-size Mexican city, a retired Japanese teacher in a small town)
and two base sessions are consistent, clean texts. Each planted case changes one sentence
or one turn of a base, so it has the length of its control; each control changes one too,
with something that looks like a contradiction and is not (another person's name, age or
pronoun, a place visited in the past, a number that matches).

A label says what the critics must decide: `critic` and `reason` (code) for a planted
case (None for a control, which every critic must pass), and `also`: other critics
that may fail the same record, with their codes (a loop is also a repeated n-gram).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def attrs(**values: str) -> list[dict[str, str]]:
    paths = {
        "name": "demographics.name",
        "age": "demographics.age",
        "gender": "demographics.gender",
        "country": "demographics.location.country",
        "settlement": "demographics.location.settlement",
        "occupation": "career.status.occupation",
        "children": "relationships_and_family.children.number_of_children",
        "years_in_job": "career.status.years_in_current_job",
        "years_worked": "career.history.years_worked",
        "income": "finances.income.annual_income",
    }
    return [{"path": paths[k], "value": v, "source": "sampled"} for k, v in values.items()]


BASES = {
    "A": {
        "name": "Maria Dubois",
        "attributes": attrs(
            name="Maria Dubois",
            age="34 years",
            gender="woman",
            country="France",
            settlement="large city",
            occupation="nurse",
            children="2",
            years_in_job="6 years",
            income="42000 USD/year",
        ),
        "sections": {
            "background": "Maria Dubois grew up in a small town in Brittany, the second of "
            "three children of a fisherman and a school cook. She moved to Lyon at eighteen to "
            "study nursing and has stayed in the city ever since, in a flat near the river.",
            "daily_life": "Maria is a 34-year-old nurse who works night shifts at a public "
            "hospital. On her days off she cycles along the river, shops at the market on the "
            "hill and cooks large pots of soup that last the whole week.",
            "relationships": "She shares the flat with her partner Julien, a sound engineer, "
            "and their two children. Her mother calls every Sunday, and her younger brother "
            "visits from Paris whenever the trains are not on strike.",
            "values": "Maria believes that care is a craft that deserves respect, and she will "
            "not cut corners with a patient even when the ward is understaffed and the night is "
            "long. She saves a little each month for the children's studies.",
        },
    },
    "B": {
        "name": "Kwame Mensah",
        "attributes": attrs(
            name="Kwame Mensah",
            age="52 years",
            gender="man",
            country="Ghana",
            settlement="village",
            occupation="farmer",
            children="4",
            years_in_job="20 years",
            income="3000 USD/year",
        ),
        "sections": {
            "background": "Kwame Mensah was born in a village in the Ashanti Region and has "
            "farmed the same red soil as his father. He left school after the primary years to "
            "help with the cocoa harvest and never regretted it.",
            "daily_life": "Kwame is a 52-year-old farmer who rises before dawn to walk to his "
            "plots. He grows cocoa, maize and cassava, sells at the weekly market and spends the "
            "hot afternoons repairing tools in the shade of a mango tree.",
            "relationships": "He shares a house he built with his brothers with his wife Ama "
            "and their four children. The eldest son studies agriculture in Kumasi, and the "
            "whole family gathers on Sundays after church.",
            "values": "Kwame values patience, hard work and honesty in trade. He believes land "
            "must be handed on in better shape than it was received, and he teaches his "
            "children to test the soil before they plant.",
        },
    },
    "C": {
        "name": "Alex Rivera",
        "attributes": attrs(
            name="Alex Rivera",
            age="27 years",
            gender="non-binary",
            country="Mexico",
            settlement="mid-size city",
            occupation="graphic designer",
            children="0",
            years_in_job="3 years",
            income="15000 USD/year",
        ),
        "sections": {
            "background": "Alex Rivera grew up in Puebla with two older sisters and a "
            "grandmother who painted saints for the local church. They studied design at a "
            "public university and paid for it by drawing posters for bands.",
            "daily_life": "Alex is a 27-year-old graphic designer at a small studio that makes "
            "packaging for local food brands. They start work at nine, take long lunch breaks "
            "with colleagues and sketch in a notebook on the bus home.",
            "relationships": "They share a small flat with a grey cat named Churro and see "
            "their sisters every weekend. Their closest friend, Dani, runs a taco stand and "
            "gives honest opinions about every new logo.",
            "values": "Alex cares about craft and fairness. They refuse to copy the work of "
            "other designers, charge friends the same as strangers and want to open a studio "
            "that pays interns properly.",
        },
    },
    "D": {
        "name": "Yuki Tanaka",
        "attributes": attrs(
            name="Yuki Tanaka",
            age="68 years",
            gender="woman",
            country="Japan",
            settlement="small town",
            occupation="retired teacher",
            children="1",
            years_worked="38 years",
        ),
        "sections": {
            "background": "Yuki Tanaka was born in a fishing town in Shizuoka and taught "
            "mathematics at the local middle school for almost four decades. She retired at "
            "sixty-five and still receives letters from former students.",
            "daily_life": "Yuki is a 68-year-old retired teacher who walks to the harbour every "
            "morning. She tends a small vegetable garden, plays go at the community hall and "
            "naps after lunch without any guilt.",
            "relationships": "Her only son lives in Osaka with his wife and visits twice a "
            "year. She speaks with her sister on the phone every evening, and the two of them "
            "argue happily about television dramas.",
            "values": "Yuki values order, modesty and lifelong learning. She believes a good "
            "teacher never stops being a student, and she is studying English with a radio "
            "course so that she can travel abroad.",
        },
    },
}

SESSIONS = {
    "A": [
        "Hi! I'm trying to plan meals for my night shifts next week, any ideas?",
        "Sure. Batch-cook a lentil stew on Sunday, pack it in portions, and keep nuts and "
        "fruit for the small hours so you are not tempted by the vending machine.",
        "Lentils sound good. I work as a nurse so I only get a short break, and my two kids "
        "eat with me before I leave.",
        "Then choose food you can eat cold in ten minutes: grain salads, wraps and boiled "
        "eggs travel well and keep you full until morning. Cook a double batch so the "
        "children's dinner is ready too.",
    ],
    "B": [
        "Good morning. The rains came late this year and I am worried about my maize, what "
        "should I do?",
        "Late rains shorten the season, so plant an early-maturing maize variety now and "
        "mulch the rows to keep the moisture in the soil for longer.",
        "I have grown maize for many years but never tried mulching. Is dry grass enough, or "
        "do I need to buy something?",
        "Dry grass, maize stalks or leaves all work. Spread a layer about a hand deep between "
        "the rows and keep it away from the stems so they do not rot.",
    ],
}


def persona(case_id: str, base: str, **sections: str) -> dict:
    b = copy.deepcopy(BASES[base])
    b["sections"].update(sections)
    return {
        "persona_id": case_id,
        "seed": 0,
        "index": 0,
        "taxonomy": "human@1.1.0",
        "name": b["name"],
        "attributes": b["attributes"],
        "narrative": "\n\n".join(b["sections"].values()),
        "sections": b["sections"],
        "model": "hand-written",
        "scores": {},
    }


def conversation(case_id: str, base: str, **turns: str) -> dict:
    contents = list(SESSIONS[base])
    for key, text in turns.items():
        contents[int(key[1:])] = text
    roles = ["user", "assistant"] * (len(contents) // 2)
    return {
        "conversation_id": case_id,
        "persona_id": f"control-{base}",
        "session": 0,
        "timestamp": "2025-03-01T10:00:00+00:00",
        "topic": "meal planning" if base == "A" else "farming",
        "turns": [{"role": r, "content": c} for r, c in zip(roles, contents, strict=True)],
        "profile_updates": [],
        "scores": {},
    }


S = {k: v["sections"] for k, v in BASES.items()}
LOOP_LINES = "\n".join(f"Day {i}: She works the night shift at the hospital." for i in range(1, 7))
MATCH_LINES = "\n".join(f"Chat {i}: Match made, match made." for i in range(1, 6))
MATCH_LINE = " ".join(f"Chat {i}: Match made, match made." for i in range(1, 6))
STEPS = " ".join(f"Step {i}: stir the pot and taste it." for i in range(1, 9))

# (case id, record, critic, reason, also)
PERSONAS = [
    # -- names --------------------------------------------------------------------------
    (
        "name-age-appositive",
        persona(
            "name-age-appositive",
            "A",
            daily_life=S["A"]["daily_life"].replace("Maria is", "Claire is"),
        ),
        "name_consistency",
        "other_name",
        {},
    ),
    (
        "name-subject",
        persona(
            "name-subject",
            "A",
            background=S["A"]["background"].replace("Maria Dubois grew", "Sophie Martin grew"),
        ),
        "name_consistency",
        "other_name",
        {},
    ),
    (
        "name-his-name-is",
        persona(
            "name-his-name-is",
            "B",
            values="His name is Kofi, and he values patience, hard work and honesty in trade. He believes land must be handed on in better shape than it was received.",
        ),
        "name_consistency",
        "other_name",
        {},
    ),
    (
        "name-meet",
        persona(
            "name-meet",
            "C",
            daily_life="Meet Jordan, a graphic designer at a small studio that makes packaging for local food brands. They start work at nine, take long lunch breaks with colleagues and sketch in a notebook on the bus home.",
        ),
        "name_consistency",
        "other_name",
        {},
    ),
    (
        "name-other-surname",
        persona(
            "name-other-surname",
            "D",
            background=S["D"]["background"].replace("Yuki Tanaka was", "Keiko Sato was"),
        ),
        "name_consistency",
        "other_name",
        {},
    ),
    (
        "name-her-name-is",
        persona(
            "name-her-name-is",
            "A",
            daily_life="Everyone on the ward knows that her name is Camille. She is a 34-year-old nurse who works night shifts at a public hospital and cycles along the river on her days off.",
        ),
        "name_consistency",
        "other_name",
        {},
    ),
    # -- pronouns -----------------------------------------------------------------------
    (
        "pronoun-he-after-name",
        persona(
            "pronoun-he-after-name",
            "A",
            daily_life="Maria is a 34-year-old nurse who works night shifts at a public hospital. He cycles along the river on his days off, shops at the market on the hill and cooks large pots of soup.",
        ),
        "pronoun_consistency",
        "pronoun_mismatch",
        {},
    ),
    (
        "pronoun-she-opens-section",
        persona(
            "pronoun-she-opens-section",
            "B",
            relationships=S["B"]["relationships"].replace("He shares", "She shares"),
        ),
        "pronoun_consistency",
        "pronoun_mismatch",
        {},
    ),
    (
        "pronoun-she-for-nonbinary",
        persona(
            "pronoun-she-for-nonbinary",
            "C",
            daily_life=S["C"]["daily_life"].replace("They start", "She starts"),
        ),
        "pronoun_consistency",
        "pronoun_mismatch",
        {},
    ),
    (
        "pronoun-himself-for-nonbinary",
        persona(
            "pronoun-himself-for-nonbinary",
            "C",
            values="Alex describes himself as someone who cares about craft and fairness. They refuse to copy the work of other designers and want to open a studio that pays interns properly.",
        ),
        "pronoun_consistency",
        "pronoun_mismatch",
        {},
    ),
    (
        "pronoun-he-after-values",
        persona(
            "pronoun-he-after-values",
            "D",
            values=S["D"]["values"].replace("She believes", "He believes"),
        ),
        "pronoun_consistency",
        "pronoun_mismatch",
        {},
    ),
    (
        "pronoun-and-he",
        persona(
            "pronoun-and-he",
            "A",
            values=S["A"]["values"].replace("respect, and she will", "respect, and he will"),
        ),
        "pronoun_consistency",
        "pronoun_mismatch",
        {},
    ),
    # -- ages ---------------------------------------------------------------------------
    (
        "age-older",
        persona(
            "age-older", "A", daily_life=S["A"]["daily_life"].replace("34-year-old", "45-year-old")
        ),
        "attribute_consistency",
        "age_mismatch",
        {},
    ),
    (
        "age-younger",
        persona(
            "age-younger",
            "B",
            daily_life=S["B"]["daily_life"].replace("52-year-old", "39-year-old"),
        ),
        "attribute_consistency",
        "age_mismatch",
        {},
    ),
    (
        "age-birth-year",
        persona(
            "age-birth-year",
            "D",
            background=S["D"]["background"].replace(
                "was born in a fishing", "was born in 1980 in a fishing"
            ),
        ),
        "attribute_consistency",
        "birth_year_mismatch",
        {},
    ),
    (
        "age-at-forty",
        persona(
            "age-at-forty",
            "C",
            values="At 40, Alex is someone who cares about craft and fairness. They refuse to copy the work of other designers and want to open a studio that pays interns properly.",
        ),
        "attribute_consistency",
        "age_mismatch",
        {},
    ),
    # -- numbers ------------------------------------------------------------------------
    (
        "children-three",
        persona(
            "children-three",
            "A",
            relationships="She has three children with her partner Julien, a sound engineer. Her mother calls every Sunday, and her younger brother visits from Paris whenever the trains are not on strike.",
        ),
        "attribute_consistency",
        "children_mismatch",
        {},
    ),
    (
        "children-none",
        persona(
            "children-none",
            "B",
            relationships="Kwame has no children, and he shares a house he built with his brothers with his wife Ama. The whole family gathers on Sundays after church.",
        ),
        "attribute_consistency",
        "children_mismatch",
        {},
    ),
    (
        "years-in-job",
        persona(
            "years-in-job",
            "B",
            daily_life="Kwame has worked as a farmer for 5 years, rising before dawn to walk to his plots. He grows cocoa, maize and cassava and sells at the weekly market.",
        ),
        "attribute_consistency",
        "years_in_job_mismatch",
        {},
    ),
    (
        "years-worked",
        persona(
            "years-worked",
            "D",
            daily_life="She has taught mathematics for 10 years in all, and now she walks to the harbour every morning. She tends a small vegetable garden and plays go at the community hall.",
        ),
        "attribute_consistency",
        "years_in_job_mismatch",
        {},
    ),
    (
        "income-ten-times",
        persona(
            "income-ten-times",
            "A",
            daily_life="Maria is a 34-year-old nurse who works night shifts at a public hospital. She earns $400,000 a year and cycles along the river on her days off.",
        ),
        "attribute_consistency",
        "income_mismatch",
        {},
    ),
    (
        "income-monthly",
        persona(
            "income-monthly",
            "C",
            values=S["C"]["values"] + " Alex makes about $15,000 a month from the studio.",
        ),
        "attribute_consistency",
        "income_mismatch",
        {},
    ),
    # -- places -------------------------------------------------------------------------
    (
        "place-city-abroad",
        persona(
            "place-city-abroad",
            "A",
            relationships="She lives in Berlin with her partner Julien, a sound engineer, and their two children. Her mother calls every Sunday, and her younger brother visits whenever the trains are not on strike.",
        ),
        "attribute_consistency",
        "location_mismatch",
        {},
    ),
    (
        "place-country",
        persona(
            "place-country",
            "B",
            daily_life="Kwame lives in Japan and rises before dawn to walk to his plots. He grows cocoa, maize and cassava, sells at the weekly market and repairs tools in the shade of a mango tree.",
        ),
        "attribute_consistency",
        "location_mismatch",
        {},
    ),
    (
        "place-village-for-city",
        persona(
            "place-village-for-city",
            "A",
            daily_life="Maria lives in a small village in the hills and works night shifts at a public hospital. On her days off she cycles, shops at the market and cooks large pots of soup.",
        ),
        "attribute_consistency",
        "settlement_mismatch",
        {},
    ),
    (
        "place-city-for-village",
        persona(
            "place-city-for-village",
            "B",
            daily_life="Kwame lives in a big city and rises before dawn to walk to his plots. He grows cocoa, maize and cassava, sells at the weekly market and repairs tools in the shade.",
        ),
        "attribute_consistency",
        "settlement_mismatch",
        {},
    ),
    (
        "place-metropolis-for-town",
        persona(
            "place-metropolis-for-town",
            "D",
            daily_life="Yuki lives in a bustling metropolis and walks to the harbour every morning. She tends a small vegetable garden, plays go at the community hall and naps after lunch.",
        ),
        "attribute_consistency",
        "settlement_mismatch",
        {},
    ),
    # -- repetition ---------------------------------------------------------------------
    (
        "repeat-digit-lines",
        persona("repeat-digit-lines", "A", daily_life=LOOP_LINES),
        "gopher_repetition",
        "dup_line_frac",
        {"repeated_ngrams": "repeated_ngrams"},
    ),
    (
        "repeat-paragraph",
        persona("repeat-paragraph", "B", values=S["B"]["relationships"]),
        "gopher_repetition",
        "dup_para_char_frac",
        {"repeated_sentences": "repeated_sentence"},
    ),
    (
        "repeat-sentence-loop",
        persona("repeat-sentence-loop", "C", values="They like walks. " * 30),
        "gopher_repetition",
        "top_2_gram",
        {"repeated_ngrams": "repeated_ngrams", "repeated_sentences": "repeated_sentence"},
    ),
    (
        "repeat-digit-steps",
        persona("repeat-digit-steps", "D", values=STEPS),
        "gopher_repetition",
        "dup_5_gram",
        {"repeated_ngrams": "repeated_ngrams"},
    ),
    # -- controls -----------------------------------------------------------------------
    ("control-A", persona("control-A", "A"), None, None, {}),
    ("control-B", persona("control-B", "B"), None, None, {}),
    ("control-C", persona("control-C", "C"), None, None, {}),
    ("control-D", persona("control-D", "D"), None, None, {}),
    (
        "control-friend-named",
        persona(
            "control-friend-named",
            "A",
            relationships="Her closest friend is a teacher from the hospital choir. Her name is Sophie Laurent, and she lives in Paris with two cats and a piano nobody plays.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-brother-subject",
        persona(
            "control-brother-subject",
            "B",
            relationships="His brother Kofi lives in Accra with his own family. Kofi grew up sharing a bed with Kwame and now drives a taxi through the busy streets of the capital.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-partner-he",
        persona(
            "control-partner-he",
            "A",
            relationships="Her partner Julien is a sound engineer. He works from home, picks the children up from school and cooks on weekends while Maria sleeps after her shifts.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-child-ages",
        persona(
            "control-child-ages",
            "A",
            relationships="Her daughter is 7 years old and her son is 4. She shares the flat with her partner Julien, a sound engineer, who takes them to school every morning.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-past-place",
        persona(
            "control-past-place",
            "A",
            values=S["A"]["values"] + " When she was 20, she lived in Berlin for a year.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-sister-children",
        persona(
            "control-sister-children",
            "A",
            relationships="Her sister has three children, and Maria adores them. She shares the flat with her partner Julien, a sound engineer, and their two children.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-matching-numbers",
        persona(
            "control-matching-numbers",
            "A",
            values=S["A"]["values"] + " She has two children and earns about $3,500 a month.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-years-match",
        persona(
            "control-years-match",
            "D",
            values=S["D"]["values"] + " She has worked as a teacher for 38 years and misses it.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-friend-she",
        persona(
            "control-friend-she",
            "C",
            relationships="Their closest friend, Dani, runs a taco stand. She gives honest opinions about every new logo and never lets Alex skip a meal.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-village",
        persona(
            "control-village",
            "B",
            daily_life="Kwame lives in a small village and rises before dawn to walk to his plots. He grows cocoa, maize and cassava, sells at the weekly market and repairs tools in the shade.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-dates",
        persona(
            "control-dates",
            "D",
            values="Yuki values order and lifelong learning. In 2019 she joined a calligraphy club, in 2021 she started a radio course in English, and in 2024 she travelled to Korea for 12 days.",
        ),
        None,
        None,
        {},
    ),
]

CONVERSATIONS = [
    # -- roles --------------------------------------------------------------------------
    (
        "role-user-is-assistant",
        conversation(
            "role-user-is-assistant",
            "A",
            t0="Hello, I am your assistant today. I'm trying to plan meals for my night shifts next week, any ideas?",
        ),
        "role_consistency",
        "user_speaks_as_assistant",
        {},
    ),
    (
        "role-user-offers-help",
        conversation(
            "role-user-offers-help",
            "B",
            t2="How can I help you today? I have grown maize for many years but never tried mulching.",
        ),
        "role_consistency",
        "user_speaks_as_assistant",
        {},
    ),
    (
        "role-user-is-ai",
        conversation(
            "role-user-is-ai",
            "A",
            t2="As an AI language model I do not eat, but lentils sound good for a short break.",
        ),
        "role_consistency",
        "user_speaks_as_assistant",
        {"prompt_leakage": "marker"},
    ),
    (
        "role-assistant-thanks",
        conversation(
            "role-assistant-thanks",
            "A",
            t3="Thanks for your help! I will cook a double batch of grain salad so the children's dinner is ready too.",
        ),
        "role_consistency",
        "assistant_speaks_as_user",
        {},
    ),
    (
        "role-assistant-is-persona",
        conversation(
            "role-assistant-is-persona",
            "A",
            t1="I'm Maria, and I work nights too, so I batch-cook a lentil stew on Sunday and pack it in portions.",
        ),
        "role_consistency",
        "assistant_speaks_as_user",
        {},
    ),
    (
        "role-assistant-user-label",
        conversation(
            "role-assistant-user-label",
            "B",
            t3="User: dry grass, maize stalks or leaves all work, spread between the rows.",
        ),
        "role_consistency",
        "assistant_speaks_as_user",
        {"prompt_leakage": "marker"},
    ),
    (
        "role-assistant-family",
        conversation(
            "role-assistant-family",
            "B",
            t1="My wife and I plant an early-maturing maize variety every year, so try that and mulch the rows.",
        ),
        "role_consistency",
        "assistant_speaks_as_user",
        {},
    ),
    # -- consistency of the user's words ------------------------------------------------
    (
        "user-other-name",
        conversation(
            "user-other-name",
            "A",
            t0="Hi, I'm Sophie! I'm trying to plan meals for my night shifts next week, any ideas?",
        ),
        "name_consistency",
        "other_name",
        {},
    ),
    (
        "user-age",
        conversation(
            "user-age",
            "A",
            t2="Lentils sound good. I'm 52, so I need something gentle on the stomach before a shift.",
        ),
        "attribute_consistency",
        "age_mismatch",
        {},
    ),
    (
        "user-settlement",
        conversation(
            "user-settlement",
            "A",
            t2="Lentils sound good. I live in a tiny village, so the shops close early and I cook at home.",
        ),
        "attribute_consistency",
        "settlement_mismatch",
        {},
    ),
    (
        "user-children",
        conversation(
            "user-children",
            "A",
            t2="Lentils sound good. I have three kids to feed before I leave for the hospital.",
        ),
        "attribute_consistency",
        "children_mismatch",
        {},
    ),
    (
        "user-birth-year",
        conversation(
            "user-birth-year",
            "B",
            t2="I was born in 1990 and I have never tried mulching. Is dry grass enough?",
        ),
        "attribute_consistency",
        "birth_year_mismatch",
        {},
    ),
    (
        "user-country",
        conversation(
            "user-country",
            "B",
            t2="I live in Kenya and I have never tried mulching. Is dry grass enough, or do I need to buy something?",
        ),
        "attribute_consistency",
        "location_mismatch",
        {},
    ),
    # -- repetition ---------------------------------------------------------------------
    (
        "repeat-match-made-lines",
        conversation("repeat-match-made-lines", "A", t1=MATCH_LINES),
        "gopher_repetition",
        "dup_line_frac",
        {"repeated_ngrams": "repeated_ngrams", "language": "not_english"},
    ),
    (
        "repeat-match-made-line",
        conversation("repeat-match-made-line", "A", t1=MATCH_LINE),
        "gopher_repetition",
        "dup_6_gram",
        {"repeated_ngrams": "repeated_ngrams", "language": "not_english"},
    ),
    (
        "repeat-same-answer",
        conversation("repeat-same-answer", "B", t3=SESSIONS["B"][1]),
        "gopher_repetition",
        "dup_para_char_frac",
        {},
    ),
    (
        "repeat-steps",
        conversation("repeat-steps", "A", t3=STEPS),
        "gopher_repetition",
        "top_4_gram",
        {"repeated_ngrams": "repeated_ngrams"},
    ),
    # -- controls -----------------------------------------------------------------------
    ("control-session-A", conversation("control-session-A", "A"), None, None, {}),
    ("control-session-B", conversation("control-session-B", "B"), None, None, {}),
    (
        "control-user-thanks",
        conversation(
            "control-user-thanks",
            "A",
            t2="Thank you for your help, lentils sound good. I only get a short break at work.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-assistant-offers-help",
        conversation(
            "control-assistant-offers-help",
            "A",
            t1="How can I help you plan? Batch-cook a lentil stew on Sunday, pack it in portions, and keep nuts and fruit for the small hours.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-other-assistant",
        conversation(
            "control-other-assistant",
            "A",
            t2="Lentils sound good. My sister is a personal assistant and she swears by meal prep too.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-own-age",
        conversation(
            "control-own-age",
            "A",
            t2="Lentils sound good. I'm 34 and on my feet all night, so I need real food.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-own-village",
        conversation(
            "control-own-village",
            "B",
            t2="I live in a small village and I have never tried mulching. Is dry grass enough, or do I need to buy something?",
        ),
        None,
        None,
        {},
    ),
    (
        "control-friend-name",
        conversation(
            "control-friend-name",
            "A",
            t2="Lentils sound good. My friend Sophie says they keep her going on night shifts too.",
        ),
        None,
        None,
        {},
    ),
    (
        "control-numbers",
        conversation(
            "control-numbers",
            "B",
            t2="In 2023 I planted 2 acres and in 2024 I planted 3 acres, but I never tried mulching. Is dry grass enough?",
        ),
        None,
        None,
        {},
    ),
    (
        "control-short-thanks",
        conversation("control-short-thanks", "A", t2="Thanks!"),
        None,
        None,
        {},
    ),
]


def main() -> None:
    persona_rows = [record for _, record, *_ in PERSONAS]  # control-A, -B: the sessions'
    labels = [
        {"kind": kind, "record_id": case, "critic": critic, "reason": reason, "also": also}
        for kind, cases in (("persona", PERSONAS), ("conversation", CONVERSATIONS))
        for case, _, critic, reason, also in cases
    ]
    for name, rows in (
        ("personas.jsonl", persona_rows),
        ("conversations.jsonl", [record for _, record, *_ in CONVERSATIONS]),
        ("labels.jsonl", labels),
    ):
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        (HERE / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
