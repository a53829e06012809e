"""Context quality on conversational memory: does the evidence for a question land in the view?

    .venv/bin/python bench/recall.py                    # 3 synthetic conversations, ~3.8k turns (~2-3 min)
    .venv/bin/python bench/recall.py --quick            # 1 small conversation (~30 s)
    .venv/bin/python bench/recall.py --seed 7           # another synthetic draw
    .venv/bin/python bench/recall.py --locomo data/locomo10.json [--limit 3]
    .venv/bin/python bench/recall.py --longmemeval longmemeval_s.json --limit 20

For every question whose evidence turns are known, each turn is one ctxdb item, and we ask which
of the evidence items a context holds. Contexts compared, all over the same items of one
conversation:

  query-aware view   db.view(agent, query=question, budget=2000): relevance (cosine of the stored
                     all-MiniLM-L6-v2 embeddings fused with BM25 by reciprocal rank fusion, weight
                     `relevance`) joins priority and recency, greedy by score. Measured for several
                     agents: half_life none (recency switched off, the headline), the engine's
                     defaults (event half-life 1d, relevance 3), relevance 1/10/30 with the default
                     half-life, and a 30-day half-life.
  newest-first       db.view(agent, budget=2000) without a query, default half-life: every turn has
                     the same priority, so the score is recency and the view is the newest turns
                     that fit (checked against an explicit newest-first fill).
  vector top-k       plain cosine top-k over the same items with the same stored embeddings (the
                     `vector` field of db.search(agent, q, k=all)): k = 10, and k = as many as fit
                     in the same 2,000 tokens (greedy by cosine, same header overhead as a view).
  offline rankers    from the same search scores (cosine and BM25 of every item), filled to the
                     same token room: BM25 only, RRF k=60 (what the no-decay view must equal: a
                     consistency check), and alternatives to the current fusion: RRF with other k,
                     keyword credit only for strong BM25 matches, score fusion (cos + w*bm25/max,
                     z-scores), and a two-hop pseudo-relevance expansion (the question plus the
                     rarest terms of its two best hits, searched again; --no-two-hop skips it).

Reported: mean evidence recall (fraction of a question's evidence turns in the context) per
method, overall and per question category, the fraction of questions with all their evidence,
mean tokens used, the whole conversation's tokens, and the query-aware view latency (p50/p99,
first ask of a question, which embeds the query, and a repeat). Table on stdout, everything
(per-question details included) in bench/out/recall.json.

Each conversation gets its own store (temp dir, sync=False) with a generated ctxdb.toml:
one event per turn (type chat.message, subject conv:<id>, time = session date + turn offset,
data {speaker, text, dia_id}), the rule `key = "turn:{data.dia_id}"`, text
"{data.speaker}: {data.text}", kind event, no ttl; agents with subjects ["conv:<id>"], budget 2000.
The log's clock follows the conversation (recorded_at = the session's time), and the questions
are asked right after the last turn (LongMemEval: at question_date), so "now" and recency are
those of the conversation, not of the machine. `--item-text "{data.text}"` measures the same
without the speaker prefix, which matters: questions name a speaker, so the prefix pulls cosine
toward all of that speaker's turns and gives about half of all turns a BM25 match.

Synthetic data (default). Seeded and deterministic: two speakers, `--sessions` sessions of
`--turns` turns, filler chit-chat built from many slotted templates (greetings, errands,
opinions, questions and answers, reactions, topical "hard negatives" that mention the same kinds of
things as the facts: breeds, cities, companies, instruments...), and planted facts spread across
sessions (a pet, a job, a sibling's move, an allergy, lessons, a race, a car, a home, a book
club, a trip, a newborn, a league, a birthday, a restaurant, a partner's promotion, an injury, a
purchase, a garden, a language streak), later "callbacks" that mention a fact's names without
restating it, updates (job, home, car change later: the newer turn is the evidence; the older
one is recorded as `stale`), and two-turn chains. Question categories:

  keyword      names the fact's rare words (a pet's name, a company, a street, a price)
  paraphrase   asks for the fact in other words (content-word overlap with the evidence is
               measured and reported; the templates aim at none)
  temporal     "when did ..." (the evidence turn's session date answers it)
  update       the current value of a fact that changed; evidence = the newer turn
  multi-hop    needs two turns from different sessions (e.g. which clinic treated the beagle:
               "I adopted a beagle named Biscuit" + "Biscuit needed stitches at ...")

Public data, LoCoMo format (`--locomo PATH`): a JSON list of samples

    {"sample_id": "conv-26",
     "conversation": {"speaker_a": "Caroline", "speaker_b": "Melanie",
                      "session_1_date_time": "1:56 pm on 8 May, 2023",
                      "session_1": [{"speaker": "Caroline", "dia_id": "D1:1", "text": "...",
                                     "blip_caption": "..." (optional, appended as "[shares ...]")},
                                    ...],
                      "session_2_date_time": ..., "session_2": [...], ...},
     "qa": [{"question": "...", "answer": "...", "evidence": ["D1:3", "D2:8"], "category": 2},
            ...]}

Evidence ids are normalised (`D1:3`, also `D1: 3`, `D01:03`, several ids in one string split on
`;`/`,`/spaces); ids that name no turn are dropped and counted; a question with no evidence left
is skipped and counted. Categories are reported by their number as given (for locomo10.json
these are commonly read as 1 multi-hop, 2 temporal, 3 open-domain, 4 single-hop, 5 adversarial;
adversarial questions carry `adversarial_answer` and still list evidence). Session times that do
not parse ("%I:%M %p on %d %B, %Y") fall back to one day after the previous session. `--limit N`
takes the first N samples.

Public data, LongMemEval format (`--longmemeval PATH`): a JSON list of questions, each with its
own haystack: {"question_id", "question_type", "question", "answer", "question_date",
"haystack_dates": [...], "haystack_session_ids": [...], "haystack_sessions": [[{"role", "content",
"has_answer"?}, ...], ...]}. Evidence = the turns with has_answer true (dia_id
"<session_id>:<turn index>"); questions without such turns are skipped and counted. Each question
is one conversation (store); `--limit N` takes the first N.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import ctxdb  # noqa: E402
from ctxdb.semantic import terms  # noqa: E402

OUT = Path(__file__).resolve().parent / "out"
BUDGET = 2000
TOP_K = 10

# Agents measured per conversation: name -> (half_life for events or None = the engine default,
# relevance weight or None = the engine default). The first is the headline query-aware view.
AGENTS: dict[str, tuple[str | None, float | None]] = {
    "qa": ("none", None),
    "qa-default": (None, None),
    "qa-default-w1": (None, 1.0),
    "qa-default-w10": (None, 10.0),
    "qa-default-w30": (None, 30.0),
    "qa-hl30d": ("30d", None),
}
MAIN = "qa"
PLAIN = "qa-default"      # its view without a query is the newest-first view

LABELS = {
    "view:qa": "query-aware view, no decay (half_life none)",
    "view:qa-default": "query-aware view, engine defaults (hl 1d, rel 10)",
    "view:qa-default-w1": "query-aware view, hl 1d, relevance 1",
    "view:qa-default-w10": "query-aware view, hl 1d, relevance 10",
    "view:qa-default-w30": "query-aware view, hl 1d, relevance 30",
    "view:qa-hl30d": "query-aware view, hl 30d, relevance 3",
    "newest": "newest-first (plain db.view, hl 1d)",
    "vec@10": f"vector top-{TOP_K} (cosine, stored embeddings)",
    "vec@budget": "vector top-k filling 2000 tokens",
    "fused@10": f"db.search top-{TOP_K} (fused)",
    "bm25@budget": "BM25 only, filling 2000 tokens (offline)",
    "rrf@budget": "engine fusion only (cos + 0.1 bm25/max), 2000 tokens (offline)",
}


# ==================================================================================================
# Data model
# ==================================================================================================

@dataclass
class Turn:
    dia_id: str
    speaker: str
    text: str
    time: datetime


@dataclass
class Question:
    qid: str
    text: str
    evidence: list[str]
    category: str
    answer: str = ""
    stale: list[str] = field(default_factory=list)     # superseded evidence (updates)


@dataclass
class Conversation:
    cid: str
    speakers: tuple[str, str]
    turns: list[Turn]
    questions: list[Question]
    ask_time: datetime | None = None                    # "now" for the questions (default: last turn)
    source: str = "synthetic"
    notes: dict = field(default_factory=dict)


# ==================================================================================================
# Synthetic conversations
# ==================================================================================================

SPEAKER_PAIRS = [("Jordan", "Priya"), ("Marcus", "Elena"), ("Sam", "Noor"), ("Dana", "Felix"),
                 ("Ava", "Kwame"), ("Lena", "Tariq")]
WOMEN = ["Maya", "Lucia", "Farah", "Ingrid", "Nadia", "Elise", "Greta", "Imani", "Suki", "Anika", "Leona", "Yara",
         "Zofia", "Clara", "Esme", "Talia", "Mirela", "Ottilie", "Saoirse", "Beatrix", "Delphine"]
MEN = ["Theo", "Owen", "Declan", "Rafael", "Kofi", "Tomas", "Callum", "Mateo", "Bruno", "Hugo", "Silas", "Emeka",
       "Rowan", "Idris", "Jonah", "Kenji", "Ruben", "Caspian", "Ezekiel"]
PEOPLE = WOMEN + MEN
FILLER_PEOPLE = ["Chris", "Pat", "Alex", "Jamie", "Robin", "Casey", "Morgan", "Taylor", "Drew", "Jesse",
                 "Riley", "Quinn", "Avery", "Cameron", "Hayden", "Parker"]
PETS = ["Biscuit", "Pickles", "Mochi", "Waffles", "Juniper", "Pretzel", "Noodle", "Clementine", "Bandit",
        "Ziggy", "Olive", "Marbles", "Pepper", "Gizmo", "Sprout", "Nacho", "Dumpling", "Maple", "Rascal",
        "Fig", "Tater", "Kiwi"]
BREEDS = ["beagle", "corgi", "border collie", "golden retriever", "dachshund", "greyhound", "Shiba Inu",
          "poodle mix", "Maine Coon", "tabby kitten", "Siamese cat", "bulldog", "husky", "whippet",
          "Bernese mountain dog", "ragdoll cat"]
CITIES = ["Lisbon", "Denver", "Montreal", "Osaka", "Edinburgh", "Austin", "Portland", "Melbourne", "Valencia",
          "Prague", "Seattle", "Nairobi", "Copenhagen", "Santiago", "Halifax", "Kyoto", "Tucson", "Porto",
          "Bergen", "Savannah", "Vienna", "Auckland", "Boise", "Ljubljana", "Tallinn", "Asheville"]
COMPANIES = ["Hartwell Labs", "Northwind Analytics", "Brightline Health", "Copperleaf Studios", "Quillon Systems",
             "Bluefin Logistics", "Marrow & Finch", "Tidewater Energy", "Arcadia Robotics", "Lumen Grove",
             "Stonebridge Bank", "Pinecrest Media", "Halcyon Biotech", "Vantor Games", "Redwood Civic Tech",
             "Oxbow Foods", "Keystone Freight", "Saltmarsh Design"]
ROLES = ["data engineer", "product designer", "nurse practitioner", "chemistry teacher", "UX researcher",
         "sous chef", "project manager", "backend developer", "marketing analyst", "physical therapist",
         "technical writer", "sales lead", "lab technician", "landscape architect", "financial planner",
         "video editor", "QA engineer", "grant writer"]
CLINICS = ["Oakridge Animal Clinic", "Maple Street Vet", "Harborview Pet Hospital", "Greenfield Veterinary Center",
           "Sunnyside Animal Hospital", "Cedar Hollow Vets"]
ALLERGIES = [("shellfish", "shrimp scampi"), ("peanuts", "pad thai"), ("sesame", "hummus"), ("gluten", "sourdough"),
             ("dairy", "mac and cheese"), ("tree nuts", "pesto"), ("eggs", "omelettes"), ("soy", "edamame"),
             ("strawberries", "strawberry shortcake"), ("mustard", "honey mustard pretzels")]
INSTRUMENTS = ["cello", "piano", "jazz guitar", "violin", "drums", "ukulele", "saxophone", "harp", "banjo",
               "trumpet", "accordion", "flute"]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
RACES = [("Riverside Half Marathon", ["1 hour 55 minutes", "2 hours", "1 hour 48 minutes"]),
         ("Lakefront 10K", ["50 minutes", "47 minutes", "55 minutes"]),
         ("Harbor City Marathon", ["4 hours", "3 hours 45 minutes", "4 hours 20 minutes"]),
         ("Ridgeback Trail 25K", ["3 hours", "2 hours 40 minutes"]),
         ("Bayshore Sprint Triathlon", ["1 hour 30 minutes", "1 hour 20 minutes"]),
         ("Capitol Hill Half", ["2 hours 5 minutes", "1 hour 59 minutes"])]
COLORS = ["red", "forest green", "navy blue", "silver", "pearl white", "charcoal", "mustard yellow", "burgundy",
          "sky blue", "matte black"]
CARS = ["Subaru Outback", "Honda Civic", "Toyota RAV4", "Mazda 3", "Ford Maverick", "Kia Niro",
        "Volkswagen Golf", "Hyundai Ioniq", "Volvo V60", "Mini Cooper", "Nissan Leaf", "Jeep Wrangler"]
CAR_TRIPS = ["the coast", "my grandma's place", "a campsite up north", "the outlet mall", "the mountains",
             "a drive-in movie"]
STREETS = ["Alder Street", "Juniper Avenue", "Fairmount Road", "Belmont Street", "Chestnut Lane", "Harrison Avenue",
           "Linden Street", "Wexford Road", "Marigold Court", "Sycamore Drive", "Prescott Street", "Delancey Way",
           "Ashgrove Terrace", "Quarry Lane"]
BOOKS = [("The Salt Orchard", "Mina Castell"), ("Glass Harbor", "Peter Aldane"),
         ("A Winter of Small Hours", "Ruth Okafor"), ("The Cartographer's Daughter", "Lena Voss"),
         ("Nine Lanterns", "Daniel Reyes"), ("Paper Moons Over Kettering", "Iris Bellamy"),
         ("The Quiet Engine", "Sol Haddad"), ("Wild Arithmetic", "June Tamura"),
         ("Ferryman's Almanac", "Ola Brandt"), ("Under the Lemon Roof", "Cecile Marsh")]
TRIPS = [("Sintra", "Portugal"), ("Hallstatt", "Austria"), ("Oaxaca", "Mexico"), ("Hoi An", "Vietnam"),
         ("Dubrovnik", "Croatia"), ("Tromso", "Norway"), ("Cusco", "Peru"), ("Queenstown", "New Zealand"),
         ("Kotor", "Montenegro"), ("Matera", "Italy"), ("Chefchaouen", "Morocco"), ("Reykjavik", "Iceland")]
BABY_RELS = ["cousin", "brother", "best friend", "sister-in-law", "college roommate", "neighbor"]
BABIES = ["Wren", "Ezra", "Lila", "Milo", "Hazel", "Arlo", "Nora", "Otto", "Iris", "Jude", "Pearl", "Remy"]
LEAGUES = ["volleyball", "pickleball", "ultimate frisbee", "bowling", "kickball", "table tennis", "futsal",
           "curling", "dodgeball"]
VENUES = ["Riverside Rec Center", "the Eastgate gym", "Lincoln Park courts", "Bayview Community Hall",
          "the old armory downtown", "Hollis Sports Dome"]
PARTIES = ["a small dinner party", "a karaoke night", "a picnic in the park", "a board game marathon",
           "a backyard barbecue"]
RESTAURANTS = ["Casa Lumbre", "Saffron Alley", "The Copper Pot", "Little Hanoi", "Nonna Rosa", "Ember & Rye",
               "Blue Lotus", "Taqueria Solana", "Khachapuri House", "Pho Lantern"]
CUISINES = ["Oaxacan", "Persian", "Ethiopian", "Vietnamese", "Neapolitan", "Georgian", "Peruvian", "Sichuan",
            "Lebanese", "Basque"]
LANDMARKS = ["the old train station", "the public library", "the riverfront", "the farmers market",
             "the art museum", "the stadium"]
PARTNER_TITLES = ["head nurse", "senior associate", "associate professor", "operations manager", "lead engineer",
                  "chief of staff", "store manager", "principal designer"]
PARTNER_PLACES = ["St. Anne's Hospital", "the city planning office", "a law firm downtown", "Westbrook University",
                  "the regional airport", "the county library system"]
BODY = ["ankle", "wrist", "knee", "shoulder"]
INJURY_HOW = ["bouldering", "playing pickleball", "slipping on black ice", "skateboarding with my nephew",
              "missing the last step on the stairs", "chasing a bus"]
PURCHASES = [("espresso machine", "1,250"), ("road bike", "2,400"), ("standing desk", "780"),
             ("mechanical keyboard", "340"), ("used piano", "1,900"), ("pair of hiking boots", "265"),
             ("robot vacuum", "615"), ("camera lens", "1,480"), ("sofa", "2,150"), ("drone", "920")]
PLANTS = ["tomato", "blueberry", "lavender", "rosemary", "raspberry", "hydrangea", "pepper", "sunflower"]
LANGUAGES = ["Japanese", "Portuguese", "Korean", "Italian", "Greek", "Swahili", "Dutch", "Turkish", "Polish"]
WORKPLACES = ["a ceramics studio", "a seafood restaurant", "the botanical garden", "a bike shop",
              "a startup incubator", "the city aquarium", "a vineyard", "a children's theater"]
GIFTS = ["hand-thrown mug", "vintage record player", "watercolor set", "sourdough starter", "framed star map",
         "knitting kit", "cast iron skillet", "polaroid camera"]

# ---- filler pools ---------------------------------------------------------------------------------
TIME_REFS = ["Yesterday", "This morning", "Last night", "On Sunday", "Over the weekend", "Earlier today",
             "The other day", "Last Tuesday", "After work yesterday", "This afternoon", "On Friday night",
             "A couple of days ago", "First thing this morning", "During my lunch break"]
ACTIVITIES = ["I finally cleaned out the garage", "I tried a new recipe for {dish}",
              "I watched a documentary about {doc}", "I went for a long walk around {park}",
              "I reorganized my whole bookshelf", "I fixed the squeaky door in the hallway",
              "I met up with some old classmates for coffee", "I spent hours assembling a {furniture}",
              "I got lost in a thrift store downtown", "I baked {baked} for the neighbors",
              "I caught up on a mountain of laundry", "I tried a {exercise} class at the gym",
              "I repainted the {room}", "I wandered around a street fair", "I did a huge grocery run",
              "I went to a {genre} concert", "I started a jigsaw puzzle with a thousand pieces",
              "I helped {fname} move a couch up three flights of stairs", "I sorted through old photos",
              "I finally returned those library books", "I spent the evening fixing my bike chain",
              "I tried meditating for twenty minutes", "I cooked a big pot of {dish}",
              "I volunteered at the food bank", "I deep-cleaned the kitchen", "I went thrifting with {fname}",
              "I rewatched an old favorite movie", "I replanted the sad plants on my balcony",
              "I spent way too long choosing new curtains", "I took a pottery drop-in class",
              "I hosted a game night", "I called my grandparents", "I finally sorted my inbox",
              "I tried the new bakery on the corner", "I walked to the lake and back",
              "I got a haircut that I'm still unsure about", "I fell asleep on the couch at eight"]
EVALS = ["and honestly it was more fun than I expected", "which took way longer than planned",
         "and now I'm completely wiped out", "and I'd totally do it again", "but I kind of regret it",
         "and it made my whole week", "though the weather did not cooperate", "and it was weirdly relaxing",
         "which was chaos from start to finish", "and I feel like a functioning adult now",
         "and I have zero regrets", "and it was exactly what I needed", "but my back is not happy about it",
         "and I forgot how much I enjoy that", "which was a small disaster but a fun one"]
DISHES = ["lentil soup", "chicken curry", "shakshuka", "ramen", "chili", "mushroom risotto", "dumplings",
          "lasagna", "tacos", "banana bread", "pierogi", "gumbo"]
DOCS = ["deep sea creatures", "the history of jazz", "competitive cheese rolling", "octopuses",
        "ancient Rome", "bees", "the space race", "glassblowing", "volcanoes", "street food in Bangkok"]
PARKS = ["the reservoir", "the botanical garden", "the old quarry trail", "the riverside path", "the arboretum",
         "the harbor"]
FURNITURE = ["bookcase", "wardrobe", "bed frame", "desk", "dresser", "shoe rack"]
BAKED = ["cinnamon rolls", "lemon bars", "brownies", "oatmeal cookies", "a pear tart", "focaccia"]
EXERCISES = ["spin", "barre", "kickboxing", "hot yoga", "rowing", "aqua aerobics"]
ROOMS = ["bathroom", "spare bedroom", "hallway", "kitchen cabinets", "front door"]
GENRES = ["jazz", "bluegrass", "indie rock", "synth-pop", "classical", "reggae", "metal"]
MEDIA_VERBS = [("listening to", "a podcast"), ("reading", "a book"), ("watching", "a series"),
               ("listening to", "an audiobook"), ("watching", "videos")]
MEDIA_TOPICS = ["urban gardening", "true crime", "minimalism", "the ocean", "medieval history", "sleep science",
                "architecture", "stand-up comedy", "famous heists", "mountaineering", "fermentation",
                "bird migration", "old Hollywood"]
MEDIA_REACT = ["and I can't stop talking about it", "and it's surprisingly addictive",
               "though it's a bit slow in places", "and it has completely changed how I think about it",
               "and I keep recommending it to people", "which is great for my commute"]
QUESTIONS = ["What are you up to this weekend?", "Have you watched anything good lately?",
             "How's everything on your end?", "Did you end up going to that thing you mentioned?",
             "Any fun plans coming up?", "How has work been treating you?", "Read anything good recently?",
             "How are you sleeping these days?", "Have you been cooking much lately?",
             "What's the best thing that happened to you this week?", "Are you doing anything for the holidays?",
             "How's the weather over there?", "Have you tried any new places to eat?",
             "Do you have any trips planned?", "How's your family doing?",
             "Been to any concerts recently?", "Are you still doing that early morning routine?",
             "How's the neighborhood been?", "Have you picked up any new hobbies?",
             "What's been keeping you busy?"]
ANSWER_LEADS = ["Honestly, not much.", "Oh, a bit of everything.", "Pretty good, thanks for asking!",
                "It's been a week, let me tell you.", "Ha, funny you should ask.", "Not bad at all.",
                "Quiet, which I needed.", "Busy but good.", "Mostly resting, to be honest.",
                "Kind of a mixed bag."]
INTERJ = ["Ha", "Oh nice", "No way", "Aw", "Wow", "Haha", "Oh man", "Honestly", "Ooh", "Oh wow", "Nice",
          "Ah", "Love that", "Ugh"]
COMMENTS = ["that sounds like a perfect day", "I need to try that sometime", "you always find the best stuff",
            "I'm jealous", "that made me laugh", "that's so you", "I can totally picture it",
            "sounds like you earned a nap", "that's a great way to spend the time", "I would have done the same",
            "that's the kind of thing I keep meaning to do", "good for you", "that's impressive",
            "I hope you took pictures", "that sounds exhausting but worth it", "what a story"]
FOLLOWUPS = ["How did it go?", "Would you do it again?", "Was it crowded?", "Who went with you?",
             "How long did that take?", "Did you like it?", "Was it expensive?", "What was the best part?",
             "Are you going back?", "How are you feeling now?"]
WEATHER = ["It's been pouring here for three days straight.", "We finally got some sunshine today.",
           "The wind here is ridiculous this week.", "It snowed overnight and nobody was ready.",
           "It's so humid I might melt.", "Perfect sweater weather out here.", "The heat wave is finally over.",
           "Fog everywhere this morning, it looked like a movie set."]
FEELINGS = ["I'm trying to get better at going to bed early.", "I've been feeling pretty scattered lately.",
            "Work has been a lot, but I'm managing.", "I'm in a really good mood today for no reason.",
            "I need a vacation, even a tiny one.", "I've been drinking way too much coffee.",
            "I'm finally getting into a good routine.", "I've been trying to spend less time on my phone.",
            "Motivation is low this week, not going to lie.", "I've been in a cleaning mood lately."]
# hard negatives: the same kinds of words as the facts, about nobody in particular
DISTRACTORS = ["My neighbor's {breed} barks at every single delivery truck.",
               "I saw the cutest {breed} at the park and nearly asked to take it home.",
               "A coworker just got back from {city} and won't stop talking about it.",
               "I keep seeing articles saying {company} is hiring a ton of people.",
               "I've always wanted to learn {instrument}, but I never have the time.",
               "{fname} keeps sending me listings for apartments on {street}.",
               "Have you ever been to {city}? It's been on my list forever.",
               "I read a review of a {cuisine} place that sounds amazing.",
               "My doctor keeps telling me to drink more water and stretch.",
               "{fname} is thinking about quitting to become a {role}.",
               "There's a {league} tournament in the park this weekend, the whole street is packed.",
               "I walked past a {color} {car} today that looked brand new.",
               "Somebody at work is running the {race} this year.",
               "Our office book swap had a copy of some novel about a lighthouse.",
               "{fname}'s {rel} just moved to {city} for work.",
               "I keep getting ads for a {purchase}, my phone is definitely listening.",
               "I watched a video about growing {plant} plants indoors, seems tricky.",
               "A friend of mine is learning {language} and it sounds so hard.",
               "My cousin works at a hospital and her shifts are brutal.",
               "Prices at the grocery store are wild right now.",
               "The vet near me just put up a sign for free nail trims.",
               "I keep meaning to plan a proper trip abroad.",
               "I heard {restaurant_d} is closing down, which is sad."]
OPENERS = ["Hey {o}! How have you been?", "Hi {o}, long time no talk!", "Morning {o}! Got a minute to chat?",
           "Hey hey, {o}! What's new?", "{o}! It feels like forever since we caught up.",
           "Hi {o}, hope your week is going okay.", "Hey {o}, I was just thinking about you.",
           "Evening {o}! How was your day?", "Hey {o}, sorry I went quiet for a bit."]
OPENER_REPLIES = ["Hey {o}! Good to hear from you.", "Hi {o}! I'm doing alright, you?",
                  "{o}! Perfect timing, I was about to text you.", "Hey! Things are good, busy but good.",
                  "Hi hi! Yes, I've got time.", "Oh hey {o}, what a nice surprise."]
CLOSERS = ["Okay, I have to run, talk soon!", "I should get going, but this was fun.",
           "Alright, dinner's ready, catch you later!", "Let's talk again soon, take care!",
           "I need to sleep, good night!", "Gotta go, but keep me posted!", "Talk later, have a great evening!"]
CLOSER_REPLIES = ["Bye {o}, take care!", "Talk soon!", "Night {o}!", "Sounds good, later!", "Have a good one!",
                  "Catch you later, {o}!"]
CLOSER_TAILS = ["", "", "Say hi to everyone for me.", "Good luck with everything this week.", "Remind me to tell you about {fname}.",
                "Let's get food next time I'm around.", "Send me pictures!", "Don't work too hard.",
                "I'll text you about {weekday}.", "Enjoy the rest of your {part}."]
LEADINS = ["", "", "", "Oh, before I forget, ", "Anyway, ", "So, ", "Oh! ", "Random update: ", "Also, ",
           "Speaking of which, "]
REACT_POS = ["Congrats, {s}! That's wonderful news.", "Oh that's amazing, {s}!", "No way, that's so exciting!",
             "That's fantastic, I'm really happy for you.", "Wow, {s}, big news!", "Yay! Tell me everything.",
             "That's so cool, you deserve it.", "Oh I love that for you."]
REACT_NEG = ["Oh no, {s}, I'm so sorry.", "Ugh, that's rough.", "Oh no! Are you okay?",
             "That's awful, I hope it gets better soon.", "Yikes, take care of yourself."]
REACT_NEU = ["Oh interesting, tell me more.", "Nice, that sounds like a good plan.", "Ha, that's great.",
             "Ooh, fun!", "Oh cool, I didn't know that.", "That sounds lovely, {s}."]


def _pron(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice([("he", "him", "his"), ("she", "her", "her")])


class Fact:
    """A planted fact: turns at given sessions (by speaker), questions on them, later callbacks."""

    def __init__(self, speaker: str, sentiment: str = "pos") -> None:
        self.speaker = speaker
        self.sentiment = sentiment
        self.parts: list[dict] = []            # {"text", "min_session", "session", "dia_id"}
        self.questions: list[tuple[str, str, list[int], str, list[int]]] = []  # text, cat, part idx, answer, stale
        self.callbacks: list[str] = []
        self.callback_until: int | None = None  # part index after which callbacks stop (updates)

    def part(self, text: str) -> int:
        self.parts.append({"text": text})
        return len(self.parts) - 1

    def q(self, text: str, category: str, evidence: list[int], answer: str, stale: list[int] = ()) -> None:
        self.questions.append((text, category, list(evidence), answer, list(stale)))


class Synth:
    """Builds one synthetic conversation (deterministic for a seed)."""

    def __init__(self, seed: int, idx: int, sessions: int, turns: tuple[int, int], start: datetime) -> None:
        self.rng = random.Random(seed * 1009 + idx)
        self.idx = idx
        self.n_sessions = sessions
        self.turn_range = turns
        self.start = start
        self.a, self.b = SPEAKER_PAIRS[(seed + idx) % len(SPEAKER_PAIRS)]
        self.used: dict[str, set] = {}
        self.texts: set[str] = set()
        self.dup_retries = 0

    # ---- entities (unique per conversation for names; pools shared across speakers) --------------
    def pick(self, pool_name: str, pool: list):
        used = self.used.setdefault(pool_name, set())
        free = [x for x in pool if x not in used]
        x = self.rng.choice(free or pool)
        used.add(x)
        return x

    def person(self, gender: str | None = None):
        """A name not used yet in this conversation, with (he/she, him/her, his/her)."""
        g = gender or self.rng.choice("fm")
        name = self.pick("people", WOMEN if g == "f" else MEN)
        self.used.setdefault("people", set()).add(name)
        return name, (("she", "her", "her") if g == "f" else ("he", "him", "his"))

    # ---- facts -------------------------------------------------------------------------------------
    def facts_for(self, s: str, o: str, n: int) -> list[Fact]:
        r = self.rng
        kinds = [self.f_pet, self.f_job, self.f_sibling, self.f_allergy, self.f_lessons, self.f_race, self.f_car,
                 self.f_home, self.f_book, self.f_trip, self.f_baby, self.f_league, self.f_birthday,
                 self.f_restaurant, self.f_partner, self.f_injury, self.f_purchase, self.f_garden,
                 self.f_language, self.f_gift]
        r.shuffle(kinds)
        # the multi-hop and update kinds first so that every conversation has some
        prefer = [self.f_pet, self.f_job, self.f_home, self.f_sibling, self.f_gift, self.f_car]
        order = [k for k in kinds if k in prefer] + [k for k in kinds if k not in prefer]
        return [k(s, o) for k in order[:n]]

    def f_pet(self, s, o):
        r = self.rng
        pet, breed = self.pick("pets", PETS), self.pick("breeds", BREEDS)
        he, him, his = _pron(r)
        when = r.choice(["last weekend", "a few days ago", "on Saturday", "this week"])
        trait = r.choice([f"{he.capitalize()} has already chewed through two of my shoes.",
                          f"{he.capitalize()} sleeps on my feet every night.",
                          f"{he.capitalize()} is terrified of the vacuum.",
                          f"{he.capitalize()} follows me from room to room."])
        f = Fact(s)
        a = f.part(f"I adopted a {breed} named {pet} {when}! {trait}")
        f.q(f"What breed is {pet}?", "keyword", [a], breed)
        f.q(f"What kind of four-legged companion did {s} bring home?", "paraphrase", [a], f"a {breed}")
        f.q(f"When did {s} adopt {pet}?", "temporal", [a], "session date")
        f.callbacks = [f"{pet} finally learned to sit, I'm so proud of {him}.",
                       f"Sorry if I'm slow to reply, {pet} is demanding a walk.",
                       f"Took {pet} to the lake this morning, {he} was soaked by the end.",
                       f"{pet} stole a whole sandwich off the counter yesterday."]
        if r.random() < 0.85:
            clinic, n = self.pick("clinics", CLINICS), r.randint(3, 9)
            b = f.part(f"{pet} needed {n} stitches at {clinic} after squeezing under the fence.")
            f.q(f"Which vet patched up {s}'s {breed} after an injury?", "multi-hop", [a, b], clinic)
        return f

    def f_job(self, s, o):
        r = self.rng
        c1, role1 = self.pick("companies", COMPANIES), self.pick("roles", ROLES)
        c2, role2 = self.pick("companies", COMPANIES), self.pick("roles", ROLES)
        f = Fact(s)
        a = f.part(f"I officially started at {c1} as a {role1} on Monday, first week went great.")
        f.q(f"When did {s} start working at {c1}?", "temporal", [a], "session date")
        f.callbacks = [f"Work at {c1} has been nonstop this week.", f"My team at {c1} is doing a hackathon Friday.",
                       f"We had a long offsite with the whole {c1} crew today."]
        if r.random() < 0.8:
            b = f.part(f"Quick update: I left {c1}, and I'm now a {role2} at {c2}. Big change but a good one.")
            f.callback_until = 1
            f.q(f"What is {s}'s job title at {c2}?", "keyword", [b], role2)
            f.q(f"Who employs {s} at the moment?", "update", [b], c2, stale=[a])
        else:
            f.q(f"What position does {s} hold at {c1}?", "keyword", [a], role1)
            f.q(f"Who employs {s} these days?", "paraphrase", [a], c1)
        return f

    def f_sibling(self, s, o):
        r = self.rng
        rel = r.choice(["sister", "brother"])
        (sib, (pr, _, _)), city = self.person("f" if rel == "sister" else "m"), self.pick("cities", CITIES)
        month = r.choice(MONTHS)
        f = Fact(s)
        a = f.part(f"My {rel} {sib} moved to {city} in {month}, and {pr} loves it there.")
        f.q(f"Which city did {sib} move to?", "keyword", [a], city)
        f.q(f"Where has {s}'s sibling settled?", "paraphrase", [a], city)
        if r.random() < 0.8:
            wp = self.pick("workplaces", WORKPLACES)
            b = f.part(f"{sib} landed a job at {wp}, {pr} starts next week.")
            f.q(f"Where does {s}'s {rel} in {city} work?", "multi-hop", [a, b], wp)
        return f

    def f_gift(self, s, o):
        r = self.rng
        (friend, (he, _, _)), gift, city = self.person(), self.pick("gifts", GIFTS), self.pick("cities", CITIES)
        f = Fact(s)
        a = f.part(f"My friend {friend} surprised me with a {gift}, so thoughtful.")
        f.q(f"Who gave {s} a {gift}?", "keyword", [a], friend)
        b = f.part(f"{friend} told me {he}'s relocating to {city} in {r.choice(MONTHS)} for a new position.")
        f.q(f"Where is the friend who gave {s} the {gift} moving?", "multi-hop", [a, b], city)
        return f

    def f_allergy(self, s, o):
        allergen, food = self.pick("allergies", ALLERGIES)
        f = Fact(s, "neg")
        a = f.part(f"Turns out I'm allergic to {allergen}, the doctor confirmed it, so {food} is off the menu for me.")
        f.q(f"What is {s} allergic to?", "keyword", [a], allergen)
        f.q(f"Which ingredient should {o} leave out when cooking for {s}?", "paraphrase", [a], allergen)
        return f

    def f_lessons(self, s, o):
        r = self.rng
        inst, (teacher, _), day = self.pick("instruments", INSTRUMENTS), self.person(), r.choice(WEEKDAYS)
        f = Fact(s)
        a = f.part(f"I've been taking {inst.removesuffix('s')} lessons every {day} with a teacher named {teacher}.")
        f.q(f"Who teaches {s} {inst}?", "keyword", [a], teacher)
        f.q(f"Which musical skill is {s} picking up?", "paraphrase", [a], inst)
        f.callbacks = [f"My {inst} teacher gave me a really tricky piece this week.",
                       f"Practiced {inst} for an hour and my neighbors are probably sick of me."]
        return f

    def f_race(self, s, o):
        r = self.rng
        race, times = RACES[r.randrange(len(RACES))]
        t = r.choice(times)
        month = r.choice(MONTHS)
        f = Fact(s)
        a = f.part(f"I signed up for the {race} in {month}, and I'm aiming to finish in under {t}.")
        f.q(f"What finishing time is {s} aiming for in the {race}?", "keyword", [a], t)
        f.q(f"Which athletic competition is {s} preparing for?", "paraphrase", [a], race)
        f.callbacks = ["Did a long training run today, my legs are jelly.",
                       "My training plan says intervals tomorrow, wish me luck."]
        return f

    def f_car(self, s, o):
        r = self.rng
        color, model, trip = self.pick("colors", COLORS), self.pick("cars", CARS), r.choice(CAR_TRIPS)
        f = Fact(s)
        a = f.part(f"We finally bought a car, a {color} {model}, and the first trip was to {trip}.")
        f.q(f"What color is {s}'s {model}?", "keyword", [a], color)
        f.callbacks = [f"The {model} needs an oil change already, how is that possible.",
                       f"Someone dinged the door of the {model} in a parking lot, I'm furious."]
        if r.random() < 0.6:
            color2, model2 = self.pick("colors", COLORS), self.pick("cars", CARS)
            b = f.part(f"I sold the {model} and replaced it with a {color2} {model2}, way better on gas.")
            f.callback_until = 1
            f.q(f"What vehicle does {s} drive these days?", "update", [b], f"{color2} {model2}", stale=[a])
        else:
            f.q(f"What did {s} recently purchase for getting around?", "paraphrase", [a], f"{color} {model}")
        return f

    def f_home(self, s, o):
        r = self.rng
        n, street = r.randint(1, 4), self.pick("streets", STREETS)
        f = Fact(s)
        a = f.part(f"We just signed a lease on a {n}-bedroom apartment on {street}, moving in next month.")
        f.q(f"How many bedrooms does the apartment on {street} have?", "keyword", [a], str(n))
        f.callbacks = [f"The upstairs neighbors on {street} have a drum kit, send help.",
                       f"Our landlord on {street} finally fixed the heating."]
        if r.random() < 0.75:
            street2 = self.pick("streets", STREETS)
            b = f.part(f"Huge news, we bought a little house on {street2}! Goodbye, landlords.")
            f.callback_until = 1
            f.q(f"Where does {s} live now?", "update", [b], street2, stale=[a])
        else:
            f.q(f"What is {s}'s current address like?", "paraphrase", [a], f"{n}-bedroom on {street}")
        return f

    def f_book(self, s, o):
        title, author = self.pick("books", BOOKS)
        f = Fact(s)
        a = f.part(f"My book club picked {title} by {author} for this month, and I'm halfway through.")
        f.q(f"Who wrote {title}?", "keyword", [a], author)
        f.q(f"What novel is {s}'s reading group discussing?", "paraphrase", [a], title)
        return f

    def f_trip(self, s, o):
        r = self.rng
        town, country = self.pick("trips", TRIPS)
        n, month = r.randint(3, 12), r.choice(MONTHS)
        f = Fact(s)
        a = f.part(f"We booked {n} nights in {town}, {country} for {month}, I can't wait.")
        f.q(f"How many nights is {s} staying in {town}?", "keyword", [a], str(n))
        f.q(f"Where is {s} heading for the upcoming holiday?", "paraphrase", [a], f"{town}, {country}")
        return f

    def f_baby(self, s, o):
        r = self.rng
        rel, baby = r.choice(BABY_RELS), self.pick("babies", BABIES)
        kid, obj = r.choice([("girl", "her"), ("boy", "him")])
        f = Fact(s)
        a = f.part(f"My {rel} just had a baby {kid}, they named {obj} {baby}.")
        f.q(f"Whose baby is {baby}?", "keyword", [a], f"{s}'s {rel}'s")
        f.q(f"Has anyone close to {s} welcomed a newborn, and what is the child called?", "paraphrase", [a], baby)
        f.q(f"When was {baby} born?", "temporal", [a], "session date")
        return f

    def f_league(self, s, o):
        r = self.rng
        sport, venue, day = self.pick("leagues", LEAGUES), self.pick("venues", VENUES), r.choice(WEEKDAYS)
        f = Fact(s)
        a = f.part(f"I joined a {sport} league that plays at {venue} on {day} nights.")
        f.q(f"Where does {s}'s {sport} league play?", "keyword", [a], venue)
        f.q(f"Which evening is {s}'s weekly game?", "paraphrase", [a], day)
        return f

    def f_birthday(self, s, o):
        r = self.rng
        month, day, party = r.choice(MONTHS), r.randint(1, 28), r.choice(PARTIES)
        f = Fact(s)
        a = f.part(f"My birthday is {month} {day}, and I'm planning {party} this year.")
        f.q(f"When is {s}'s birthday?", "temporal", [a], f"{month} {day}")
        f.q(f"How does {s} want to celebrate turning a year older?", "paraphrase", [a], party)
        return f

    def f_restaurant(self, s, o):
        rest, cuisine, lm = self.pick("restaurants", RESTAURANTS), self.pick("cuisines", CUISINES), \
            self.rng.choice(LANDMARKS)
        f = Fact(s)
        a = f.part(f"Our new favorite spot is {rest}, a little {cuisine} place near {lm}.")
        f.q(f"What kind of food does {rest} serve?", "keyword", [a], cuisine)
        f.q(f"Where do {s} and their partner like to eat out lately?", "paraphrase", [a], rest)
        return f

    def f_partner(self, s, o):
        (partner, _), title, place = self.person(), self.rng.choice(PARTNER_TITLES), self.rng.choice(PARTNER_PLACES)
        f = Fact(s)
        a = f.part(f"My partner {partner} just got promoted to {title} at {place}!")
        f.q(f"What position was {partner} promoted to?", "keyword", [a], title)
        f.q(f"What does {s}'s significant other do for a living?", "paraphrase", [a], f"{title} at {place}")
        return f

    def f_injury(self, s, o):
        r = self.rng
        part, how = r.choice(BODY), r.choice(INJURY_HOW)
        f = Fact(s, "neg")
        a = f.part(f"I sprained my {part} {how} last {r.choice(WEEKDAYS)}, so I'm stuck on the couch for a while.")
        f.q(f"How did {s} sprain their {part}?", "keyword", [a], how)
        f.q(f"Why has {s} been laid up recently?", "paraphrase", [a], f"sprained {part}")
        return f

    def f_purchase(self, s, o):
        item, price = self.pick("purchases", PURCHASES)
        f = Fact(s)
        a = f.part(f"I splurged {price} dollars on a {item} and I regret nothing.")
        f.q(f"What did {s} pay {price} dollars for?", "keyword", [a], item)
        f.q(f"What pricey thing did {s} treat themselves to?", "paraphrase", [a], item)
        return f

    def f_garden(self, s, o):
        r = self.rng
        plant, n = self.pick("plants", PLANTS), r.randint(3, 14)
        f = Fact(s)
        a = f.part(f"I planted {n} {plant} bushes along the back fence this spring.")
        f.q(f"How many {plant} bushes did {s} plant?", "keyword", [a], str(n))
        f.q(f"What has {s} been growing in the yard?", "paraphrase", [a], plant)
        return f

    def f_language(self, s, o):
        r = self.rng
        lang, n = self.pick("languages", LANGUAGES), r.randint(20, 400)
        f = Fact(s)
        a = f.part(f"I started learning {lang} on an app and I'm on a {n}-day streak.")
        f.q(f"How long is {s}'s {lang} streak?", "keyword", [a], f"{n} days")
        f.q(f"What foreign tongue is {s} studying?", "paraphrase", [a], lang)
        return f

    # ---- filler ------------------------------------------------------------------------------------
    def fill(self, template: str, **kw) -> str:
        r = self.rng
        slots = dict(dish=r.choice(DISHES), doc=r.choice(DOCS), park=r.choice(PARKS), furniture=r.choice(FURNITURE),
                     baked=r.choice(BAKED), exercise=r.choice(EXERCISES), room=r.choice(ROOMS), genre=r.choice(GENRES),
                     fname=r.choice(FILLER_PEOPLE), breed=r.choice(BREEDS), city=r.choice(CITIES),
                     company=r.choice(COMPANIES), instrument=r.choice(INSTRUMENTS), street=r.choice(STREETS),
                     cuisine=r.choice(CUISINES), role=r.choice(ROLES), league=r.choice(LEAGUES), color=r.choice(COLORS),
                     car=r.choice(CARS), race=r.choice(RACES)[0], rel=r.choice(["sister", "brother", "cousin"]),
                     purchase=r.choice(PURCHASES)[0], plant=r.choice(PLANTS), language=r.choice(LANGUAGES),
                     restaurant_d=r.choice(["the diner on Fifth", "that noodle bar downtown", "the corner pizza place",
                                            "the old taco truck"]))
        slots.update(kw)
        return template.format(**slots)

    def statement(self) -> str:
        r = self.rng
        k = r.random()
        if k < 0.45:
            return f"{r.choice(TIME_REFS)} {self.fill(r.choice(ACTIVITIES))}, {r.choice(EVALS)}."
        if k < 0.62:
            verb, what = r.choice(MEDIA_VERBS)
            return f"I've been {verb} {what} about {r.choice(MEDIA_TOPICS)} lately, {r.choice(MEDIA_REACT)}."
        if k < 0.75:
            return r.choice(WEATHER) + " " + r.choice(FEELINGS)
        if k < 0.87:
            return r.choice(FEELINGS)
        return self.fill(r.choice(DISTRACTORS))

    def reaction(self, s: str, q: bool) -> str:
        r = self.rng
        t = f"{r.choice(INTERJ)}, {r.choice(COMMENTS)}."
        if q:
            t += " " + r.choice(FOLLOWUPS)
        return t

    def answer(self) -> str:
        r = self.rng
        return r.choice(ANSWER_LEADS) + " " + self.statement()

    def unique(self, make) -> str:
        for _ in range(30):
            t = make()
            if t not in self.texts:
                self.texts.add(t)
                return t
            self.dup_retries += 1
        t = make() + " " + self.rng.choice(["Anyway.", "Ha.", "Long story.", "You know how it is.", "Oh well."])
        self.texts.add(t)
        return t

    # ---- assembly ----------------------------------------------------------------------------------
    def build(self) -> Conversation:
        r = self.rng
        a, b = self.a, self.b
        n_facts = max(3, round(self.n_sessions * 0.45))
        facts = self.facts_for(a, b, n_facts) + self.facts_for(b, a, n_facts)
        S = self.n_sessions
        # schedule every fact part onto a session (chains and updates in order, sessions apart)
        plan: dict[int, list[tuple[Fact, int]]] = {i: [] for i in range(S)}
        for f in facts:
            k = len(f.parts)
            if k == 1:
                sess = [r.randrange(S)]
            else:
                first = r.randrange(0, max(1, S - 4 * (k - 1)))
                sess = [first]
                for _ in range(k - 1):
                    lo = sess[-1] + 3
                    sess.append(r.randrange(min(lo, S - 1), S))
            for pi, si in enumerate(sess):
                f.parts[pi]["session"] = si
                plan[si].append((f, pi))
        # callbacks: a few per fact, after its first part (and before an update, if any)
        cb_plan: dict[int, list[tuple[str, str]]] = {i: [] for i in range(S)}
        for f in facts:
            if not f.callbacks:
                continue
            lo = f.parts[0]["session"] + 1
            hi = f.parts[f.callback_until]["session"] if f.callback_until is not None else S
            for t in r.sample(f.callbacks, k=min(len(f.callbacks), r.randint(1, 3))):
                if lo < hi:
                    cb_plan[r.randrange(lo, hi)].append((f.speaker, t))

        turns: list[Turn] = []
        day = self.start
        for si in range(S):
            gap = r.randint(3, 16)
            day = day + timedelta(days=gap) if si else day
            t0 = day.replace(hour=r.randint(8, 21), minute=r.randint(0, 59), second=0)
            n = r.randint(*self.turn_range)
            first = r.choice([a, b])
            other = {a: b, b: a}
            spk = [first if j % 2 == 0 else other[first] for j in range(n)]
            slot: list[str | None] = [None] * n
            origin: list[tuple[Fact, int] | None] = [None] * n
            # planted parts at free positions of their speaker, each followed by a reaction
            for f, pi in plan[si]:
                cands = [j for j in range(1, n - 2) if spk[j] == f.speaker and slot[j] is None and slot[j + 1] is None
                         and (j == 0 or slot[j - 1] is None)]
                if not cands:
                    n += 2
                    spk += [spk[-2], spk[-1]]
                    slot += [None, None]
                    origin += [None, None]
                    cands = [j for j in range(1, n - 2) if spk[j] == f.speaker and slot[j] is None
                             and slot[j + 1] is None]
                j = r.choice(cands)
                lead = r.choice(LEADINS)
                text = f.parts[pi]["text"]
                if lead.endswith(", ") and text.split()[0] in ("My", "We", "Our", "Turns", "Quick", "Huge"):
                    text = text[0].lower() + text[1:]
                slot[j] = lead + text
                origin[j] = (f, pi)
                pool = REACT_NEG if f.sentiment == "neg" else (REACT_POS if pi == 0 or r.random() < 0.5 else REACT_NEU)
                slot[j + 1] = self.unique(lambda: r.choice(pool).format(s=f.speaker) + " " + self.reaction(other[f.speaker], True))
            for who, t in cb_plan[si]:
                cands = [j for j in range(1, n - 1) if spk[j] == who and slot[j] is None]
                if cands:
                    slot[cands[r.randrange(len(cands))]] = t
            # filler for the rest: opener, chat flow, closer
            prev_q = False
            for j in range(n):
                if slot[j] is not None:
                    prev_q = slot[j].rstrip().endswith("?")
                    continue
                o = other[spk[j]]
                if j == 0:
                    slot[j] = self.unique(lambda: (self.fill(r.choice(OPENERS), o=o) + " " + r.choice(["", self.statement()])).strip())
                elif j == 1 and slot[0] is not None and origin[0] is None:
                    slot[j] = self.unique(lambda: self.fill(r.choice(OPENER_REPLIES), o=o) + " " + r.choice(QUESTIONS))
                elif j == n - 2:
                    slot[j] = self.unique(lambda: (r.choice(CLOSERS) + " " + self.fill(
                        r.choice(CLOSER_TAILS), weekday=r.choice(WEEKDAYS),
                        part=r.choice(["day", "evening", "weekend", "week"]))).strip())
                elif j == n - 1:
                    slot[j] = self.unique(lambda: (self.fill(r.choice(CLOSER_REPLIES), o=o) + " " + r.choice(
                        ["", "", "Thanks for the chat.", "That was fun.", "Miss you already.", "Same time next week?",
                         "I'll hold you to that.", "Will do!"])).strip())
                elif prev_q:
                    slot[j] = self.unique(self.answer)
                else:
                    k = r.random()
                    if k < 0.35:
                        slot[j] = self.unique(lambda: self.reaction(spk[j], r.random() < 0.5))
                    elif k < 0.55:
                        slot[j] = self.unique(lambda: self.reaction(spk[j], False) + " " + self.statement())
                    elif k < 0.7:
                        slot[j] = self.unique(lambda: self.statement() + " " + r.choice(QUESTIONS))
                    else:
                        slot[j] = self.unique(self.statement)
                prev_q = slot[j].rstrip().endswith("?")
            t = t0
            for j in range(n):
                dia = f"D{si + 1}:{j + 1}"
                turns.append(Turn(dia, spk[j], slot[j], t))
                if origin[j] is not None:
                    f, pi = origin[j]
                    f.parts[pi]["dia_id"] = dia
                t = t + timedelta(seconds=r.randint(20, 150))
        questions: list[Question] = []
        for f in facts:
            for text, cat, ev, ans, stale in f.questions:
                questions.append(Question(f"c{self.idx}-q{len(questions) + 1:03d}", text,
                                          [f.parts[i]["dia_id"] for i in ev], cat, ans,
                                          [f.parts[i]["dia_id"] for i in stale]))
        return Conversation(f"s{self.idx}", (a, b), turns, questions,
                            ask_time=turns[-1].time + timedelta(minutes=5),
                            notes={"facts": len(facts), "dup_retries": self.dup_retries})


def synthetic(seed: int, n_conv: int, sessions: int, turns: tuple[int, int]) -> list[Conversation]:
    start = datetime(2023, 1, 9, tzinfo=timezone.utc)
    return [Synth(seed, i, sessions, turns, start + timedelta(days=11 * i)).build() for i in range(n_conv)]


# ==================================================================================================
# Public data loaders
# ==================================================================================================

_DIA = re.compile(r"D\s*(\d+)\s*:\s*(\d+)")


def norm_dia(s: str) -> str:
    m = _DIA.fullmatch(s.strip())
    return f"D{int(m.group(1))}:{int(m.group(2))}" if m else s.strip()


def split_evidence(ev) -> list[str]:
    out: list[str] = []
    for e in ev or []:
        e = str(e)
        found = _DIA.findall(e)
        if found:
            out.extend(f"D{int(a)}:{int(b)}" for a, b in found)
        elif e.strip():
            out.append(e.strip())
    return list(dict.fromkeys(out))


def parse_locomo_time(s: str) -> datetime | None:
    s = " ".join(str(s).split())
    for fmt in ("%I:%M %p on %d %B, %Y", "%I:%M %p on %d %b, %Y", "%I:%M %p on %B %d, %Y", "%Y-%m-%d %H:%M",
                "%Y/%m/%d (%a) %H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    return None


def _cat(c) -> str:
    return f"cat{c}" if isinstance(c, int) or str(c).isdigit() else str(c)


def _locomo_time(t: datetime) -> str:
    h = t.hour % 12 or 12
    return f"{h}:{t.minute:02d} {'am' if t.hour < 12 else 'pm'} on {t.day} {MONTHS[t.month - 1]}, {t.year}"


def export_locomo(convs: list[Conversation], path: str) -> None:
    """The synthetic conversations as a LoCoMo-format file (the loader's round trip)."""
    out = []
    for c in convs:
        conv: dict = {"speaker_a": c.speakers[0], "speaker_b": c.speakers[1]}
        for t in c.turns:
            sn = int(t.dia_id.split(":")[0][1:])
            if f"session_{sn}" not in conv:
                conv[f"session_{sn}_date_time"] = _locomo_time(t.time)
                conv[f"session_{sn}"] = []
            conv[f"session_{sn}"].append({"speaker": t.speaker, "dia_id": t.dia_id, "text": t.text})
        out.append({"sample_id": c.cid, "conversation": conv,
                    "qa": [{"question": q.text, "answer": q.answer, "evidence": q.evidence, "category": q.category}
                           for q in c.questions]})
    Path(path).write_text(json.dumps(out, indent=1))


def load_locomo(path: str, limit: int | None) -> tuple[list[Conversation], dict]:
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        data = data.get("data") or data.get("samples") or list(data.values())
    stats = {"dropped_evidence_ids": 0, "questions_without_evidence": 0, "questions": 0, "bad_dates": 0}
    convs = []
    for n, sample in enumerate(data[:limit] if limit else data):
        c = sample["conversation"]
        nums = sorted(int(m.group(1)) for k in c if (m := re.fullmatch(r"session_(\d+)", k)))
        turns: list[Turn] = []
        prev: datetime | None = None
        for sn in nums:
            t = parse_locomo_time(c.get(f"session_{sn}_date_time", ""))
            if t is None:
                stats["bad_dates"] += 1
                t = (prev + timedelta(days=1)) if prev else datetime(2023, 1, 1, tzinfo=timezone.utc)
            if prev and t <= prev:
                t = prev + timedelta(minutes=1)
            for j, turn in enumerate(c[f"session_{sn}"] or []):
                text = str(turn.get("text", ""))
                if turn.get("blip_caption"):
                    text += f" [shares {turn['blip_caption']}]"
                dia = norm_dia(str(turn.get("dia_id") or f"D{sn}:{j + 1}"))
                turns.append(Turn(dia, str(turn.get("speaker", "")), text, t + timedelta(seconds=30 * j)))
            prev = turns[-1].time if turns else t
        ids = {t.dia_id for t in turns}
        qs = []
        for i, qa in enumerate(sample.get("qa", [])):
            stats["questions"] += 1
            ev = split_evidence(qa.get("evidence"))
            good = [e for e in ev if e in ids]
            stats["dropped_evidence_ids"] += len(ev) - len(good)
            if not good:
                stats["questions_without_evidence"] += 1
                continue
            ans = qa.get("answer", qa.get("adversarial_answer", ""))
            qs.append(Question(f"{sample.get('sample_id', n)}-q{i + 1:03d}", str(qa["question"]), good,
                               _cat(qa.get("category", "?")), str(ans)))
        convs.append(Conversation(str(sample.get("sample_id", f"locomo{n}")),
                                  (c.get("speaker_a", "A"), c.get("speaker_b", "B")), turns, qs,
                                  source="locomo"))
    return convs, stats


def load_longmemeval(path: str, limit: int | None) -> tuple[list[Conversation], dict]:
    data = json.loads(Path(path).read_text())
    stats = {"questions": 0, "questions_without_evidence": 0, "bad_dates": 0}
    convs = []
    for entry in data:
        if limit and len(convs) >= limit:
            break
        stats["questions"] += 1
        turns: list[Turn] = []
        ev: list[str] = []
        prev = None
        sids = entry.get("haystack_session_ids") or [f"S{i}" for i in range(len(entry["haystack_sessions"]))]
        dates = entry.get("haystack_dates") or [None] * len(sids)
        order = sorted(range(len(sids)), key=lambda i: (parse_locomo_time(dates[i] or "") or datetime.min.replace(
            tzinfo=timezone.utc), i))
        for i in order:
            t = parse_locomo_time(dates[i] or "")
            if t is None:
                stats["bad_dates"] += 1
                t = (prev + timedelta(days=1)) if prev else datetime(2023, 1, 1, tzinfo=timezone.utc)
            if prev and t <= prev:
                t = prev + timedelta(minutes=1)
            for j, m in enumerate(entry["haystack_sessions"][i]):
                dia = f"{sids[i]}:{j}"
                turns.append(Turn(dia, str(m.get("role", "")), str(m.get("content", "")), t + timedelta(seconds=30 * j)))
                if m.get("has_answer"):
                    ev.append(dia)
            prev = turns[-1].time if turns else t
        if not ev:
            stats["questions_without_evidence"] += 1
            continue
        qid = str(entry.get("question_id", len(convs)))
        q = Question(qid, str(entry["question"]), ev, str(entry.get("question_type", "?")), str(entry.get("answer", "")))
        ask = parse_locomo_time(entry.get("question_date") or "")
        convs.append(Conversation(qid, ("user", "assistant"), turns, [q],
                                  ask_time=ask if ask and ask > turns[-1].time else None, source="longmemeval"))
    return convs, stats


# ==================================================================================================
# Running one conversation through ctxdb
# ==================================================================================================

ITEM_TEXT = "{data.speaker}: {data.text}"


def config_toml(conv: Conversation, item_text: str = ITEM_TEXT) -> str:
    out = ['[[rules]]', 'on = "chat.message"', 'key = "turn:{data.dia_id}"', f'text = {json.dumps(item_text)}',
           'kind = "event"', 'priority = 0.5', '']
    for name, (hl, rel) in AGENTS.items():
        out += [f'[agents.{name}]', f'subjects = ["conv:{conv.cid}"]', f'budget = {BUDGET}']
        if hl is not None:
            out.append(f'half_life = {{ event = "{hl}" }}')
        if rel is not None:
            out.append(f'weights = {{ relevance = {rel} }}')
        out.append('')
    out += ['[snapshots]', 'every = 0']
    return "\n".join(out) + "\n"


def _us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def _iso(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def fill_room(order: list[str], tokens: dict[str, int], room: int) -> list[str]:
    """Greedy like the view: take in order what fits, skip what does not, keep trying smaller."""
    used, out = 0, []
    smallest = min(tokens.values()) if tokens else 0
    for k in order:
        if room - used < smallest:
            break
        c = tokens[k]
        if used + c <= room:
            used += c
            out.append(k)
    return out


def keys_of(items) -> set[str]:
    s = set()
    for it in items:
        s.add(it.key)
        s.update(getattr(it, "merged", ()) or ())
    return s


def run_conversation(conv: Conversation, args, workdir: Path) -> dict:
    d = workdir / f"store-{re.sub(r'[^A-Za-z0-9_.-]', '_', conv.cid)}"
    d.mkdir(parents=True)
    cfg = d / "ctxdb.toml"
    cfg.write_text(config_toml(conv, args.item_text))
    clock = {"now": _us(conv.turns[0].time)}
    db = ctxdb.open(d / "data", config=cfg, clock=lambda: clock["now"], sync=False)
    t0 = time.perf_counter()
    try:
        # one append per session (turns sharing a session date), recorded at the session's last turn
        batch: list[dict] = []
        subj = f"conv:{conv.cid}"

        def flush():
            if batch:
                clock["now"] = max(clock["now"], _us(conv.turns[0].time), batch[-1]["_t"])
                db.append([{k: v for k, v in e.items() if k != "_t"} for e in batch])
                batch.clear()

        last_day = None
        for t in conv.turns:
            day = t.dia_id.split(":")[0]
            if last_day is not None and day != last_day:
                flush()
            last_day = day
            batch.append({"type": "chat.message", "subject": subj, "time": _iso(t.time), "id": f"{conv.cid}/{t.dia_id}",
                          "source": "bench.recall", "data": {"speaker": t.speaker, "text": t.text, "dia_id": t.dia_id},
                          "_t": _us(t.time)})
        flush()
        if conv.ask_time is not None:
            # move "now" to when the questions are asked (an event no rule projects)
            clock["now"] = max(clock["now"], _us(conv.ask_time))
            db.append([{"type": "bench.ask", "subject": subj, "time": _iso(conv.ask_time), "data": {}}])
        t_append = time.perf_counter() - t0
        db.wait()
        t_ready = time.perf_counter() - t0

        full = db.view(MAIN, budget=10 ** 9)
        tokens = {it.key: it.tokens for it in full.items}
        times = {it.key: it.time for it in full.items}
        n_items = len(full.items)
        plain = db.view(PLAIN)
        overhead = plain.tokens - sum(it.tokens for it in plain.items)
        room = BUDGET - overhead
        newest_keys = keys_of(plain.items)
        explicit_newest = set(fill_room(sorted(tokens, key=lambda k: (times[k], k), reverse=True), tokens, room))
        df: dict[str, int] = {}
        for it in full.items:
            for term in set(terms(it.text)):
                df[term] = df.get(term, 0) + 1
        recs = []
        lat_cold, lat_warm = [], []
        for q in conv.questions:
            ev = [f"turn:{e}" for e in q.evidence]
            rec = {"conv": conv.cid, "qid": q.qid, "category": q.category, "question": q.text, "answer": q.answer,
                   "evidence": ev, "stale": [f"turn:{e}" for e in q.stale], "methods": {}}

            def put(name, keys, used_tokens):
                found = [e for e in ev if e in keys]
                rec["methods"][name] = {"recall": len(found) / len(ev), "found": found, "tokens": used_tokens}

            s = time.perf_counter()
            v = db.view(MAIN, query=q.text)
            lat_cold.append((time.perf_counter() - s) * 1000)
            s = time.perf_counter()
            v2 = db.view(MAIN, query=q.text)
            lat_warm.append((time.perf_counter() - s) * 1000)
            assert v2.hash == v.hash, "query-aware view not reproducible"
            put(f"view:{MAIN}", keys_of(v.items), v.tokens)
            rec["stale_in_view"] = [k for k in rec["stale"] if k in keys_of(v.items)]
            for name in AGENTS:
                if name != MAIN:
                    va = db.view(name, query=q.text)
                    put(f"view:{name}", keys_of(va.items), va.tokens)
            put("newest", newest_keys, plain.tokens)
            hits = db.search(MAIN, q.text, k=n_items)
            cos = {h.key: h.vector for h in hits}
            kw = {h.key: h.keyword for h in hits}
            fused = {h.key: h.score for h in hits}
            rec["keyword_match_share"] = sum(h.keyword > 0 for h in hits) / max(1, len(hits))
            merged = {h.key: set(h.merged) for h in hits}

            def expand(keys):
                out = set(keys)
                for k in keys:
                    out |= merged.get(k, set())
                return out

            by_vec = sorted(cos, key=lambda k: (-cos[k], k))
            top = by_vec[:TOP_K]
            put("vec@10", expand(top), overhead + sum(tokens[k] for k in top))
            filled = fill_room(by_vec, {k: tokens[k] for k in cos}, room)
            put("vec@budget", expand(filled), overhead + sum(tokens[k] for k in filled))
            rec["methods"]["vec@budget"]["k"] = len(filled)
            topf = [h.key for h in hits[:TOP_K]]
            put("fused@10", expand(topf), overhead + sum(tokens[k] for k in topf))
            by_kw = sorted(cos, key=lambda k: (-kw[k], -cos[k], k))
            filled = fill_room(by_kw, {k: tokens[k] for k in cos}, room)
            put("bm25@budget", expand(filled), overhead + sum(tokens[k] for k in filled))
            by_rrf = sorted(cos, key=lambda k: (-fused[k], k))
            filled = fill_room(by_rrf, {k: tokens[k] for k in cos}, room)
            put("rrf@budget", expand(filled), overhead + sum(tokens[k] for k in filled))
            # alternatives to the current fusion, same candidates and room (offline)
            keys = list(cos)
            c = np.array([cos[k] for k in keys])
            b = np.array([kw[k] for k in keys])
            rec["alt"] = {}
            for name, score in alternatives(c, b).items():
                order = [keys[i] for i in sorted(range(len(keys)), key=lambda i: (-score[i], keys[i]))]
                filled = fill_room(order, {k: tokens[k] for k in keys}, room)
                got = expand(filled)
                rec["alt"][name] = sum(e in got for e in ev) / len(ev)
            # two-hop: the query plus the rarest terms of its two best hits, interleaved with the query's order
            if args.two_hop:
                q2 = expand_query(q.text, [h.text for h in hits[:2]], df, len(tokens))
                hits2 = db.search(MAIN, q2, k=n_items)
                order2 = [h.key for h in hits2]
                inter, seen = [], set()
                for pair in zip(by_rrf, order2):
                    for k in pair:
                        if k not in seen:
                            seen.add(k)
                            inter.append(k)
                got = expand(fill_room(inter, {k: tokens[k] for k in cos}, room))
                rec["alt"]["two-hop, interleaved"] = sum(e in got for e in ev) / len(ev)
                # the first hop's order, with the second hop's top 10 after the first hop's top 10
                top2 = [k for k in order2[:10] if k not in by_rrf[:10]]
                ins = by_rrf[:10] + top2 + [k for k in by_rrf[10:] if k not in top2]
                got = expand(fill_room(ins, {k: tokens[k] for k in cos}, room))
                rec["alt"]["two-hop, 2nd hop top-10 inserted"] = sum(e in got for e in ev) / len(ev)
                rec["two_hop_query"] = q2
            # where the evidence ranks (what a miss looks like)
            vr = {k: i + 1 for i, k in enumerate(by_vec)}
            br = {k: i + 1 for i, k in enumerate(by_kw)}
            fr = {k: i + 1 for i, k in enumerate(by_rrf)}
            now_us = _us(v.as_of)
            rec["ranks"] = {e: {"vector": vr.get(e), "bm25": br.get(e) if kw.get(e, 0) > 0 else None,
                                "fused": fr.get(e), "cos": cos.get(e), "bm25_score": kw.get(e),
                                "age_days": round((now_us - _us(datetime.fromisoformat(times[e].replace("Z", "+00:00"))))
                                                  / 86400e6, 1) if e in times else None}
                            for e in ev}
            recs.append(rec)
        t_total = time.perf_counter() - t0
        return {"cid": conv.cid, "turns": len(conv.turns), "items": n_items, "questions": len(recs),
                "whole_tokens": full.tokens, "view_overhead_tokens": overhead,
                "newest_matches_explicit": newest_keys == explicit_newest,
                "seconds": {"append": round(t_append, 2), "ready (projected + embedded)": round(t_ready, 2),
                            "total": round(t_total, 2)},
                "latency_ms": {"cold": lat_cold, "warm": lat_warm}, "records": recs,
                "first_turn": _iso(conv.turns[0].time), "last_turn": _iso(conv.turns[-1].time),
                "notes": conv.notes}
    finally:
        db.close()


def expand_query(query: str, texts: list[str], df: dict[str, int], n: int, per_text: int = 3) -> str:
    """`query` plus the `per_text` rarest terms (highest idf over the conversation) of each text
    that the query lacks: pseudo-relevance feedback, so a second hop can follow a name."""
    have = set(terms(query))
    extra: list[str] = []
    for t in texts:
        cand = sorted({w for w in terms(t) if w not in have and w not in extra and not w.isdigit()},
                      key=lambda w: (df.get(w, 0), w))
        extra += cand[:per_text]
    return query + " " + " ".join(extra) if extra else query


def alternatives(cos: np.ndarray, bm25: np.ndarray) -> dict[str, np.ndarray]:
    """Alternative relevance orders over the same scores (higher = better)."""
    def crank(x):
        s = np.sort(x)
        return len(x) - np.searchsorted(s, x, side="right") + 1
    rv = crank(cos)
    has = bm25 > 0
    rb = np.where(has, crank(np.where(has, bm25, -1.0)), np.inf)
    out = {}
    for k in (5, 20, 60):
        out[f"rrf k={k}"] = 1 / (k + rv) + np.where(has, 1 / (k + rb), 0.0)
    bn = bm25 / bm25.max() if bm25.max() > 0 else bm25
    for w in (0.1, 0.2, 0.4):
        out[f"cos + {w}*bm25/max"] = cos + w * bn
    if bm25.max() > 0:
        for frac in (0.25, 0.5):
            strong = bm25 >= frac * bm25.max()
            out[f"rrf, kw credit if bm25>={frac}max"] = 1 / (60 + rv) + np.where(strong & has, 1 / (60 + rb), 0.0)
        out["rrf, kw credit top-50"] = 1 / (60 + rv) + np.where(has & (rb <= 50), 1 / (60 + rb), 0.0)
    z = (cos - cos.mean()) / (cos.std() or 1.0)
    zb = (bm25 - bm25.mean()) / (bm25.std() or 1.0)
    out["z(cos) + z(bm25)"] = z + zb
    out["z(cos) + 0.5 z(bm25)"] = z + 0.5 * zb
    return out


# ==================================================================================================
# Report
# ==================================================================================================

def pct(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def summarize(results: list[dict]) -> dict:
    recs = [r for res in results for r in res["records"]]
    cats = sorted({r["category"] for r in recs})
    methods = list(recs[0]["methods"]) if recs else []
    summ: dict = {"questions": len(recs), "by_category_n": {c: sum(r["category"] == c for r in recs) for c in cats},
                  "methods": {}, "alternatives": {}}
    for m in methods:
        rs = [r["methods"][m] for r in recs]
        summ["methods"][m] = {
            "label": LABELS.get(m, m),
            "recall": statistics.fmean(x["recall"] for x in rs),
            "all_evidence": statistics.fmean(x["recall"] == 1.0 for x in rs),
            "tokens": statistics.fmean(x["tokens"] for x in rs),
            "by_category": {c: statistics.fmean(r["methods"][m]["recall"] for r in recs if r["category"] == c)
                            for c in cats},
        }
        if m == "vec@budget":
            summ["methods"][m]["mean_k"] = statistics.fmean(x["k"] for x in rs)
    for a in (recs[0]["alt"] if recs else {}):
        summ["alternatives"][a] = {"recall": statistics.fmean(r["alt"][a] for r in recs),
                                   "by_category": {c: statistics.fmean(r["alt"][a] for r in recs if r["category"] == c)
                                                   for c in cats}}
    cold = [x for res in results for x in res["latency_ms"]["cold"]]
    warm = [x for res in results for x in res["latency_ms"]["warm"]]
    summ["latency_ms"] = {"cold_p50": pct(cold, 50), "cold_p99": pct(cold, 99), "warm_p50": pct(warm, 50),
                          "warm_p99": pct(warm, 99), "n": len(cold)}
    whole = [res["whole_tokens"] for res in results for _ in res["records"]]
    summ["whole_conversation_tokens"] = {"mean_per_question": statistics.fmean(whole) if whole else 0,
                                         "per_conversation": {res["cid"]: res["whole_tokens"] for res in results}}
    summ["keyword_match_share_mean"] = statistics.fmean(r["keyword_match_share"] for r in recs) if recs else 0
    st = [r for r in recs if r["stale"]]
    if st:
        summ["updates_with_stale_turn_in_view"] = statistics.fmean(bool(r["stale_in_view"]) for r in st)
    # misses of the headline view: where the evidence ranked
    miss = [(r, e) for r in recs for e in r["evidence"] if e not in r["methods"][f"view:{MAIN}"]["found"]]
    summ["headline_misses"] = {
        "evidence_turns_missed": len(miss),
        "evidence_turns_total": sum(len(r["evidence"]) for r in recs),
        "missed_with_no_keyword_match": sum(r["ranks"][e]["bm25"] is None for r, e in miss),
        "missed_but_in_vector_fill": sum(e in r["methods"]["vec@budget"]["found"] for r, e in miss),
        "found_but_not_in_vector_fill": sum(e in r["methods"][f"view:{MAIN}"]["found"]
                                            and e not in r["methods"]["vec@budget"]["found"]
                                            for r in recs for e in r["evidence"]),
        "median_vector_rank_of_missed": statistics.median([r["ranks"][e]["vector"] for r, e in miss]) if miss else None,
        "median_vector_rank_of_found": statistics.median(
            [r["ranks"][e]["vector"] for r in recs for e in r["methods"][f"view:{MAIN}"]["found"]]) if recs else None,
    }
    return summ


def print_table(summ: dict, results: list[dict], meta: dict) -> None:
    cats = list(summ["by_category_n"])
    w = 52
    print()
    print(f"Evidence recall, {summ['questions']} questions, {len(results)} conversations, "
          f"{sum(r['turns'] for r in results)} turns ({meta['source']})")
    head = f"{'method':<{w}} {'recall':>6} {'all-ev':>6} {'tokens':>7} | " + " ".join(f"{c[:10]:>10}" for c in cats)
    print(head)
    print(f"{'':<{w}} {'':>6} {'':>6} {'':>7} | " + " ".join(f"{'n=' + str(summ['by_category_n'][c]):>10}" for c in cats))
    print("-" * len(head))
    for m, s in summ["methods"].items():
        label = s["label"] + (f" (k~{s['mean_k']:.0f})" if "mean_k" in s else "")
        print(f"{label[:w]:<{w}} {s['recall']:>6.3f} {s['all_evidence']:>6.3f} {s['tokens']:>7.0f} | "
              + " ".join(f"{s['by_category'][c]:>10.3f}" for c in cats))
    print("-" * len(head) + "\nalternative relevance orders, offline, same items, filled to the same 2000 tokens:")
    for a, s in summ["alternatives"].items():
        print(f"{('alt: ' + a)[:w]:<{w}} {s['recall']:>6.3f} {'':>6} {'':>7} | "
              + " ".join(f"{s['by_category'][c]:>10.3f}" for c in cats))
    wt = summ["whole_conversation_tokens"]
    print()
    print("whole conversation tokens: " + ", ".join(f"{k} {v}" for k, v in wt["per_conversation"].items())
          + f"  (2000-token view = {BUDGET / max(1, statistics.fmean(wt['per_conversation'].values())):.1%} of the mean)")
    lat = summ["latency_ms"]
    print(f"query-aware view latency ({lat['n']} questions): first ask (embeds the query) p50 {lat['cold_p50']:.1f} ms, "
          f"p99 {lat['cold_p99']:.1f} ms; repeat p50 {lat['warm_p50']:.1f} ms, p99 {lat['warm_p99']:.1f} ms")
    print(f"share of candidates with any BM25 match (they all get RRF keyword credit): "
          f"{summ['keyword_match_share_mean']:.2f} on average")
    if "updates_with_stale_turn_in_view" in summ:
        print(f"update questions whose superseded turn is also in the headline view: "
              f"{summ['updates_with_stale_turn_in_view']:.2f}")
    hm = summ["headline_misses"]
    print(f"headline view misses: {hm['evidence_turns_missed']}/{hm['evidence_turns_total']} evidence turns; "
          f"{hm['missed_with_no_keyword_match']} of them share no query term; median vector rank missed "
          f"{hm['median_vector_rank_of_missed']} vs found {hm['median_vector_rank_of_found']}; "
          f"the vector-only fill had {hm['missed_but_in_vector_fill']} of the missed and lacked "
          f"{hm['found_but_not_in_vector_fill']} that the view found")
    print("newest-first view equals an explicit newest-first fill: "
          + ", ".join(f"{r['cid']} {r['newest_matches_explicit']}" for r in results))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="one small synthetic conversation")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--conversations", type=int, default=None, help="synthetic conversations (default 3, quick 1)")
    ap.add_argument("--sessions", type=int, default=None, help="sessions per conversation (default 28, quick 12)")
    ap.add_argument("--turns", type=str, default=None, help="turns per session, lo-hi (default 30-60, quick 20-36)")
    ap.add_argument("--locomo", type=str, default=None, help="LoCoMo-format JSON (see the module docstring)")
    ap.add_argument("--longmemeval", type=str, default=None, help="LongMemEval-format JSON")
    ap.add_argument("--limit", type=int, default=None, help="first N samples of --locomo / --longmemeval")
    ap.add_argument("--out", type=str, default=str(OUT / "recall.json"))
    ap.add_argument("--no-two-hop", dest="two_hop", action="store_false",
                    help="skip the offline two-hop expansion (one more search per question)")
    ap.add_argument("--export-locomo", type=str, default=None,
                    help="also write the synthetic conversations in LoCoMo format to this path")
    ap.add_argument("--item-text", default=ITEM_TEXT,
                    help=f"the rule's text template for a turn (default {ITEM_TEXT!r})")
    ap.add_argument("--keep", action="store_true", help="keep the stores (printed path)")
    ap.add_argument("--show-misses", type=int, default=8, help="print this many headline misses")
    args = ap.parse_args()

    t_start = time.perf_counter()
    if args.locomo:
        convs, load_stats = load_locomo(args.locomo, args.limit)
        source = f"locomo:{args.locomo}"
    elif args.longmemeval:
        convs, load_stats = load_longmemeval(args.longmemeval, args.limit)
        source = f"longmemeval:{args.longmemeval}"
    else:
        nc = args.conversations or (1 if args.quick else 3)
        ns = args.sessions or (12 if args.quick else 28)
        lo, hi = map(int, (args.turns or ("20-36" if args.quick else "30-60")).split("-"))
        convs = synthetic(args.seed, nc, ns, (lo, hi))
        load_stats = {"synthetic": {"seed": args.seed, "conversations": nc, "sessions": ns, "turns": [lo, hi]}}
        source = f"synthetic seed {args.seed}"
        texts = [t.text for c in convs for t in c.turns]
        load_stats["distinct_texts"] = len(set(texts)) / max(1, len(texts))
        ov = {}
        for c in convs:
            by = {t.dia_id: t for t in c.turns}
            names = {w.lower() for w in c.speakers}
            for q in c.questions:
                qt = set(terms(q.text)) - names
                et = set().union(*(set(terms(by[e].text)) for e in q.evidence)) - names
                ov.setdefault(q.category, []).append(len(qt & et))
        load_stats["question_evidence_term_overlap_mean"] = {k: statistics.fmean(v) for k, v in ov.items()}
        load_stats["paraphrase_with_overlap"] = sum(x > 0 for x in ov.get("paraphrase", []))
        if args.export_locomo:
            export_locomo(convs, args.export_locomo)
            print(f"wrote {args.export_locomo}")
    n_turns = sum(len(c.turns) for c in convs)
    n_q = sum(len(c.questions) for c in convs)
    print(f"{source}: {len(convs)} conversations, {n_turns} turns, {n_q} questions", flush=True)

    work = Path(tempfile.mkdtemp(prefix="ctxdb-recall-"))
    results = []
    try:
        for c in convs:
            if not c.questions or not c.turns:
                continue
            res = run_conversation(c, args, work)
            results.append(res)
            print(f"  {c.cid}: {res['turns']} turns, {res['questions']} questions, whole {res['whole_tokens']} tokens, "
                  f"ready in {res['seconds']['ready (projected + embedded)']:.1f}s, total {res['seconds']['total']:.1f}s",
                  flush=True)
    finally:
        if args.keep:
            print(f"stores kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if not results:
        print("no questions with evidence", file=sys.stderr)
        return 1
    summ = summarize(results)
    meta = {"source": source, "budget": BUDGET, "item_text": args.item_text, "agents": {k: {"half_life_event": v[0] or "default (1d)",
                                                              "relevance": v[1] or "default (3.0)"}
                                                          for k, v in AGENTS.items()},
            "load": load_stats, "seconds": round(time.perf_counter() - t_start, 1),
            "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    print_table(summ, results, meta)
    if args.show_misses:
        miss = [r for res in results for r in res["records"] if r["methods"][f"view:{MAIN}"]["recall"] < 1]
        print(f"\nsome headline misses ({len(miss)} questions with evidence missing):")
        for r in miss[:: max(1, len(miss) // args.show_misses)][: args.show_misses]:
            print(f"  [{r['category']}] {r['question']}")
            for e in r["evidence"]:
                k = r["ranks"][e]
                print(f"     {e}{' (in view)' if e in r['methods'][f'view:{MAIN}']['found'] else ''}: vector rank "
                      f"{k['vector']} (cos {k['cos']:.3f}), bm25 rank {k['bm25']}, fused rank {k['fused']}, "
                      f"age {k['age_days']} d")
    print(f"\nruntime {meta['seconds']:.0f}s")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for res in results:
        res["latency_ms"] = {k: [round(x, 3) for x in v] for k, v in res["latency_ms"].items()}
    out.write_text(json.dumps({"meta": meta, "summary": summ, "conversations": results}, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
