"""Generate the data of the built-in "positive sentiment" task (``tether.tasks.sentiment``).

    python examples/data/make_sentiment_data.py [--seed 0] [--out DIR]

The stylistic-continuation task of Ziegler et al. 2019, "Fine-Tuning Language Models from
Human Preferences": the policy continues the opening of a review, and the gold utility is
VADER's compound score (``vaderSentiment``) of the continuation alone.

Openings: ten categories (hotel, restaurant, film, book, phone, headphones, coffee maker,
running shoes, museum, train journey) x 14 subjects (the specific place or item, e.g. "this
Italian restaurant near the station") x 4 opening templates = 560 openings, each ending
mid-sentence on an aspect of the subject with no trailing space ("... last month. The room").
Every opening is sentiment-neutral (the script asserts |VADER compound| < 0.05), so the
sentiment of a review comes from its continuation only. Openings are split BY SUBJECT,
within each category: 8 subjects train, 2 eval, 4 test (so no subject is in two splits, and
the eval and test files interleave the categories):

  sentiment_sft.jsonl          {"prompt", "completion"}: one or two continuations per train opening
  sentiment_prompts.jsonl      {"prompt"}: the train openings (the RL prompts)
  sentiment_preferences.jsonl  {"prompt", "chosen", "rejected"}: one or two pairs per train opening
  sentiment_preferences_eval.jsonl  the same, two per eval opening: the reward model's held-out report
  sentiment_eval.jsonl         {"prompt"}: held-out openings (PPO's held-out gold evaluation)
  sentiment_test.jsonl         {"prompt"}: test openings (the final evaluation)

Continuations are written from templates with per-category vocabulary: a predicate for the
opening's aspect (" was on the third floor and faced the car park"), then a closing remark or
a sentence about another aspect; one or two sentences, 8-25 words, starting with a space and
ending with a period. The SFT continuations demonstrate the FORMAT, not positivity: a third
each is positive (compound >= 0.05), negative (<= -0.05) and neutral or mixed (in between),
as VADER classifies them (checked and printed). In a preference pair the chosen continuation's
compound is higher by at least 0.3. Two pairs in five are graded: both continuations are positive (or both
negative) and the chosen one is more so, as in comparisons of samples from one policy, so that a reward model
learns *how* positive a continuation is, not only which side of neutral it falls on (without them, a
reward model trained on these pairs scored positive continuations the lower the longer they were, while VADER
scores them the higher, and PPO on it shortened its answers: docs/results.md). Length is made uninformative
(a balanced coin decides whether the chosen or the rejected continuation is the longer one; the script checks
that "longer wins" is right on 45-55% of pairs). Deterministic for a seed: the files are byte for
byte the same on every run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from pathlib import Path

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent.parent / "src" / "tether" / "assets" / "data"
CLASSES = ("pos", "neg", "neu")
MIN_WORDS, MAX_WORDS = 8, 25
PAIR_MARGIN = 0.3

# Each category: subjects (the specific place or item), opening templates ({s} subject, {a} aspect),
# aspects (aspect: (plural, predicates by sentiment)) and closing remarks by sentiment.
CATEGORIES = {
    "hotel": {
        "subjects": ["this small hotel near the old harbour", "this hotel by the main railway station",
                     "this family-run guesthouse in the hills", "this business hotel next to the airport",
                     "this seaside hotel on the north coast", "this boutique hotel in the city centre",
                     "this budget hotel on the ring road", "this mountain lodge above the village",
                     "this converted farmhouse inn", "this hotel opposite the conference centre",
                     "this lakeside hotel outside town", "this historic hotel on the main square",
                     "this hostel near the university", "this tall hotel beside the motorway junction"],
        "openings": ["I stayed at {s} for two nights last month. The {a}",
                     "We booked {s} for a weekend in early spring and arrived on a Friday evening. The {a}",
                     "My partner and I spent four nights at {s} during a work trip. The {a}",
                     "I checked into {s} late on a Tuesday after a long drive. The {a}"],
        "aspects": {
            "room": (False, {
                "pos": ["was spacious and bright, with a lovely view over the rooftops",
                        "was quiet, cosy and wonderfully comfortable"],
                "neg": ["was cramped and smelled of stale smoke",
                        "was noisy all night and the heating was broken"],
                "neu": ["was on the third floor and faced the car park",
                        "had a desk, a wardrobe and a window facing the street"]}),
            "staff": (True, {
                "pos": ["were friendly and helped us with everything we asked",
                        "were warm and welcoming from the moment we arrived"],
                "neg": ["were rude at check-in and ignored our requests",
                        "were unhelpful and seemed annoyed by every question"],
                "neu": ["wore grey uniforms and worked in two shifts",
                        "checked our passports and handed us two key cards"]}),
            "breakfast": (False, {
                "pos": ["was delicious, with fresh bread and excellent coffee",
                        "was a real treat, with plenty of choice"],
                "neg": ["was stale and tasteless, and the coffee was awful",
                        "was a disappointing spread of dry pastries"],
                "neu": ["was served in the basement from seven until ten",
                        "consisted of bread, cheese, eggs and coffee"]}),
            "bed": (False, {
                "pos": ["was wonderfully comfortable and I slept like a baby"],
                "neg": ["was hard and uncomfortable, and the pillows were flat"],
                "neu": ["was a double pushed against the wall under the window"]}),
            "bathroom": (False, {
                "pos": ["was spotless and modern, with a great shower"],
                "neg": ["was dirty, with mould in the corners and a broken tap"],
                "neu": ["had a shower over the bath and a small mirror"]}),
            "location": (False, {
                "pos": ["was perfect for exploring the area on foot"],
                "neg": ["was awful, far from the shops and next to a noisy road"],
                "neu": ["was about ten minutes on foot from the nearest bus stop"]}),
        },
        "closers": {
            "pos": ["I would happily stay there again.", "We enjoyed every minute of our stay.",
                    "It was excellent value for the money."],
            "neg": ["I would not stay there again.", "We left a day early and asked for a refund.",
                    "It was a waste of money."],
            "neu": ["Breakfast was served until ten.", "Check-out was at eleven in the morning.",
                    "We paid at the desk when we left.", "Parking was in a garage across the road."],
        },
    },
    "restaurant": {
        "subjects": ["this Italian restaurant near the station", "this small noodle bar on the high street",
                     "this seafood place by the harbour", "this vegetarian cafe next to the library",
                     "this steakhouse in the shopping centre", "this pizzeria around the corner from my office",
                     "this Thai restaurant on the market square", "this Lebanese restaurant across from the cinema",
                     "this tapas bar in the old town", "this burger place near the stadium",
                     "this French bistro on a side street", "this sushi counter inside the food hall",
                     "this Indian restaurant on the ring road", "this Greek taverna by the river"],
        "openings": ["I had dinner at {s} last Friday with two colleagues. The {a}",
                     "We went to {s} for lunch on a Sunday, without a reservation. The {a}",
                     "My sister and I ate at {s} before a concert in the evening. The {a}",
                     "I tried {s} for the first time on a weeknight and sat at the counter. The {a}"],
        "aspects": {
            "food": (False, {
                "pos": ["was delicious and full of flavour, every dish a delight",
                        "was fresh, hot and beautifully presented"],
                "neg": ["was bland and greasy, and my pasta was cold",
                        "was overcooked and tasted like it had been reheated"],
                "neu": ["came on large white plates about twenty minutes after we ordered",
                        "arrived in two rounds, starters first and then the mains"]}),
            "waiter": (False, {
                "pos": ["was charming and gave us great suggestions from the menu"],
                "neg": ["was rude and forgot half of our order"],
                "neu": ["took our order on a tablet and brought water to the table"]}),
            "service": (False, {
                "pos": ["was quick, warm and attentive all evening"],
                "neg": ["was painfully slow and we had to ask for everything twice"],
                "neu": ["was handled by two people who also worked behind the bar"]}),
            "portions": (True, {
                "pos": ["were generous and we happily took some home"],
                "neg": ["were tiny and left us hungry and annoyed"],
                "neu": ["were about the same size as at most places in town"]}),
            "dessert": (False, {
                "pos": ["was a wonderful chocolate tart, easily the best I have had"],
                "neg": ["was a dry, stale slice of cake that nobody finished"],
                "neu": ["was a choice between ice cream and an apple tart"]}),
            "prices": (True, {
                "pos": ["were very reasonable for such excellent cooking"],
                "neg": ["were ridiculous for such poor cooking"],
                "neu": ["were written on a board above the counter"]}),
        },
        "closers": {
            "pos": ["We will definitely be back soon.", "It was a lovely evening out.", "I enjoyed every bite."],
            "neg": ["We will not be going back.", "It was a miserable evening out.",
                    "I left feeling sick and disappointed."],
            "neu": ["We paid by card and left at nine.", "The menu changes every season.",
                    "The kitchen closes at ten on weekdays.", "We walked back to the station afterwards."],
        },
    },
    "film": {
        "subjects": ["this new science fiction film", "this two-hour detective film",
                     "this animated film about a lighthouse keeper", "this documentary about deep-sea fishing",
                     "this period film set in Lisbon", "this courtroom film from last year",
                     "this road movie about two brothers", "this black-and-white silent film",
                     "this musical set in a small town", "this spy film set in Berlin", "this western shot in Spain",
                     "this film adaptation of a long Russian book", "this low-budget film shot in one house",
                     "this sports film about a rowing team"],
        "openings": ["I watched {s} at the cinema on a Saturday afternoon. The {a}",
                     "We streamed {s} at home last weekend, with the subtitles on. The {a}",
                     "I saw {s} at a late showing on Wednesday with my brother. The {a}",
                     "I finally watched {s} on a long flight to Toronto. The {a}"],
        "aspects": {
            "plot": (False, {
                "pos": ["was gripping from the first scene to the last",
                        "was clever and kept me guessing in the best way"],
                "neg": ["was a confusing mess that went nowhere",
                        "was dull and predictable, with holes everywhere"],
                "neu": ["followed three characters over a single summer",
                        "was told in flashbacks over about two hours"]}),
            "acting": (False, {
                "pos": ["was superb, especially from the two leads"],
                "neg": ["was wooden and unconvincing throughout"],
                "neu": ["was done mostly by actors I had not seen before"]}),
            "ending": (False, {
                "pos": ["was beautiful, moving and completely satisfying"],
                "neg": ["was rushed and ruined everything that came before"],
                "neu": ["took place in the same house as the opening scene"]}),
            "soundtrack": (False, {
                "pos": ["was gorgeous and I have listened to it all week"],
                "neg": ["was loud, annoying and drowned out the dialogue"],
                "neu": ["was mostly piano, with a few older songs near the end"]}),
            "dialogue": (False, {
                "pos": ["was sharp, funny and full of great lines"],
                "neg": ["was clumsy and painfully awkward to listen to"],
                "neu": ["was partly in German and partly in English"]}),
            "camera work": (False, {
                "pos": ["was stunning, with beautiful shots of the coast"],
                "neg": ["was murky and so dark that I could barely see anything"],
                "neu": ["used long takes and a lot of handheld shots"]}),
        },
        "closers": {
            "pos": ["I would gladly watch it again.", "It is one of my favourite films this year.",
                    "The whole audience applauded at the end."],
            "neg": ["I nearly walked out halfway through.", "It was a boring waste of two hours.",
                    "I would not watch it again."],
            "neu": ["It runs for about two hours.", "It was released in the autumn.",
                    "The credits list a cast of about forty people.", "It is also available with subtitles."],
        },
    },
    "book": {
        "subjects": ["this saga about a family of clockmakers", "this biography of a nineteenth-century engineer",
                     "this travel memoir about walking across Spain", "this collection of short stories set in Dublin",
                     "this history of the printing press", "this cookbook of weeknight recipes",
                     "this science book about ocean currents", "this detective story set in Oslo",
                     "this illustrated book about a road trip", "this guide to learning chess",
                     "this essay collection about cities", "this fantasy epic with a map at the front",
                     "this economics book for general readers", "this children's book about a cat that moves house"],
        "openings": ["I read {s} over two weeks in August, a few chapters each night. The {a}",
                     "Our book group chose {s} for this month's meeting. The {a}",
                     "I borrowed {s} from the library and finished it in a week. The {a}",
                     "I listened to the audio version of {s} on my commute. The {a}"],
        "aspects": {
            "writing": (False, {
                "pos": ["was elegant and a joy to read"],
                "neg": ["was clumsy and full of tired clichés"],
                "neu": ["was in the first person and in the past tense"]}),
            "introduction": (False, {
                "pos": ["was brilliant and set up the rest of the book perfectly"],
                "neg": ["was rambling and a real chore to get through"],
                "neu": ["was about twelve pages long and explained how the book is arranged"]}),
            "opening chapter": (False, {
                "pos": ["was brilliant and hooked me straight away"],
                "neg": ["was tedious and almost made me give up"],
                "neu": ["was set in a kitchen on a winter morning"]}),
            "pacing": (False, {
                "pos": ["was perfect, steady at first and thrilling at the end"],
                "neg": ["was painfully slow, with long boring stretches"],
                "neu": ["was steady, with short chapters of around ten pages"]}),
            "research": (False, {
                "pos": ["was impressive and clearly done with great care"],
                "neg": ["was sloppy, with obvious mistakes on almost every page"],
                "neu": ["was listed in notes at the back, arranged by chapter"]}),
            "last chapter": (False, {
                "pos": ["was wonderful and tied everything together beautifully"],
                "neg": ["was a weak, lazy conclusion to a long book"],
                "neu": ["was set ten years after the rest of the story"]}),
        },
        "closers": {
            "pos": ["I will be reading everything else by this author.", "It is a book I will happily read again.",
                    "I loved it and have already lent it to my brother."],
            "neg": ["I regret buying it.", "I struggled to finish it.", "I wish I had chosen something else."],
            "neu": ["It has about three hundred pages.", "It was first published in two volumes.",
                    "The paperback has a map on the inside cover.", "There is an index at the back."],
        },
    },
    "phone": {
        "subjects": ["this mid-range phone from a Korean brand", "this compact phone with a small screen",
                     "this refurbished phone from an online shop", "this budget phone with a large battery",
                     "this foldable phone", "this phone I bought for my teenage son",
                     "this rugged phone made for building sites", "this phone with three rear cameras",
                     "this older high-end phone at a reduced price", "this phone with a stylus",
                     "this dual-SIM phone for travel", "this basic phone with physical buttons",
                     "this phone from a new Chinese brand", "this phone with a matte glass back"],
        "openings": ["I bought {s} in March and have used it every day since. The {a}",
                     "I switched to {s} after my old phone ran out of storage. The {a}",
                     "My father has been using {s} for about six weeks now. The {a}",
                     "I picked up {s} at a shop in town last month and set it up that evening. The {a}"],
        "aspects": {
            "battery": (False, {
                "pos": ["lasted a full two days and charged remarkably fast"],
                "neg": ["drained by lunchtime and the phone got hot while charging"],
                "neu": ["took about ninety minutes to charge from ten percent"]}),
            "camera": (False, {
                "pos": ["took sharp, beautiful photos even at night"],
                "neg": ["took blurry, grainy photos that looked awful indoors"],
                "neu": ["had three lenses and a setting for portraits"]}),
            "screen": (False, {
                "pos": ["was bright, crisp and a pleasure to read on"],
                "neg": ["scratched in the first week and flickered at low brightness"],
                "neu": ["was six inches across, with a small notch at the top"]}),
            "speaker": (False, {
                "pos": ["was loud and clear, great for podcasts"],
                "neg": ["was tinny and distorted at half volume"],
                "neu": ["was on the bottom edge next to the charging port"]}),
            "charger": (False, {
                "pos": ["was fast and worked perfectly with my old cables"],
                "neg": ["broke within a month and the replacement was expensive"],
                "neu": ["came in the box along with a short cable"]}),
            "software": (False, {
                "pos": ["was smooth, fast and free of annoying extras"],
                "neg": ["was buggy and crashed several times a day"],
                "neu": ["updated twice in the first month"]}),
        },
        "closers": {
            "pos": ["I am really happy with it.", "It is the best phone I have owned.",
                    "It was great value for the price."],
            "neg": ["I am returning it this week.", "It is the worst phone I have owned.",
                    "I wish I had kept my old one."],
            "neu": ["It came in a plain white box.", "It is available in three colours.",
                    "The manual is available online.", "I use it mainly for calls and maps."],
        },
    },
    "headphones": {
        "subjects": ["these wireless headphones with a fold-flat design", "these noise-cancelling headphones for flights",
                     "these wired studio headphones", "these earbuds with a charging case",
                     "these sports earbuds with ear hooks", "these open-back headphones",
                     "these budget headphones from a supermarket", "these bone-conduction headphones for cycling",
                     "these gaming headphones with a microphone", "these children's headphones with a volume limit",
                     "these over-ear headphones in a canvas case", "these earbuds from a phone maker",
                     "these headphones made from recycled plastic", "these retro-style headphones with a coiled cable"],
        "openings": ["I bought {s} for my daily commute in February. The {a}",
                     "I have used {s} at my desk for about two months. The {a}",
                     "My wife ordered {s} online and I tried them for a week. The {a}",
                     "I used {s} on a twelve-hour flight and for a week of work afterwards. The {a}"],
        "aspects": {
            "sound": (False, {
                "pos": ["was rich and detailed, and vocals sounded wonderful"],
                "neg": ["was muddy and harsh, a real letdown"],
                "neu": ["was the same over the cable and over the wireless connection"]}),
            "controls": (True, {
                "pos": ["were simple and responded perfectly to every tap"],
                "neg": ["were fiddly and kept pausing my music by accident"],
                "neu": ["were touch panels on the outside of each side"]}),
            "battery life": (False, {
                "pos": ["was excellent, easily a week of commuting per charge"],
                "neg": ["was awful, and they died halfway through my flight"],
                "neu": ["was listed as thirty hours on the box"]}),
            "bass": (False, {
                "pos": ["was punchy and fun without drowning the rest"],
                "neg": ["was weak and thin, and the mids were a mess"],
                "neu": ["could be changed with an equaliser in the app"]}),
            "ear cushions": (True, {
                "pos": ["were soft and lovely, like little pillows"],
                "neg": ["cracked and peeled within a month"],
                "neu": ["were made of grey foam and could be swapped"]}),
            "microphone": (False, {
                "pos": ["was clear and my colleagues heard me perfectly"],
                "neg": ["was terrible and everyone complained about the noise"],
                "neu": ["sat on a short arm on the left side"]}),
        },
        "closers": {
            "pos": ["I love them and use them every day.", "They were worth every penny.",
                    "I would buy them again without hesitation."],
            "neg": ["I sent them back after a week.", "They were a waste of money.", "I regret buying them."],
            "neu": ["They came with a cable and a small pouch.", "They connect over Bluetooth.",
                    "They weigh about as much as a phone.", "The case closes with a magnet."],
        },
    },
    "coffee maker": {
        "subjects": ["this drip coffee maker with a glass jug", "this capsule machine",
                     "this espresso machine with a steam wand", "this bean-to-cup machine", "this French press",
                     "this pour-over set with a ceramic dripper", "this stovetop moka pot", "this cold brew maker",
                     "this single-serve coffee maker for the office", "this coffee maker with a built-in grinder",
                     "this thermal carafe coffee maker", "this travel coffee maker that runs on batteries",
                     "this coffee maker from a German brand", "this second-hand espresso machine"],
        "openings": ["I bought {s} for our kitchen in January. The {a}",
                     "We have used {s} every morning for about three months. The {a}",
                     "I replaced our old machine with {s} at the start of the year. The {a}",
                     "My flatmate and I both use {s}, and we each make two cups a day. The {a}"],
        "aspects": {
            "coffee": (False, {
                "pos": ["was rich, smooth and better than at my favourite cafe"],
                "neg": ["was bitter and weak, and tasted burnt every time"],
                "neu": ["came out at about sixty degrees in roughly four minutes"]}),
            "water tank": (False, {
                "pos": ["was easy to fill and held enough for a whole day"],
                "neg": ["leaked onto the counter and cracked after a month"],
                "neu": ["held about a litre and sat at the back"]}),
            "controls": (True, {
                "pos": ["were simple and intuitive, a real pleasure to use"],
                "neg": ["were confusing and the buttons stuck constantly"],
                "neu": ["were two buttons and a dial on the front"]}),
            "build quality": (False, {
                "pos": ["was excellent, solid steel that felt built to last"],
                "neg": ["was poor, with flimsy plastic that broke in weeks"],
                "neu": ["was mostly plastic, with a metal plate underneath"]}),
            "brewing time": (False, {
                "pos": ["was impressively quick, perfect for busy mornings"],
                "neg": ["was painfully slow, and it failed to finish twice"],
                "neu": ["was around five minutes for a full jug"]}),
            "instructions": (True, {
                "pos": ["were clear and helpful, with good diagrams"],
                "neg": ["were useless, badly translated and missing steps"],
                "neu": ["were printed in six languages on a folded sheet"]}),
        },
        "closers": {
            "pos": ["I am delighted with it.", "Mornings are much better now.",
                    "It is the best kitchen purchase I have made."],
            "neg": ["It is going back to the shop.", "I wish I had never bought it.",
                    "It was a complete waste of money."],
            "neu": ["It came with a measuring spoon.", "It takes paper filters.", "It is about thirty centimetres tall.",
                    "We keep it next to the kettle."],
        },
    },
    "running shoes": {
        "subjects": ["these trail running shoes", "these lightweight racing flats",
                     "these cushioned road running shoes", "these running shoes with a wide toe box",
                     "these barefoot-style running shoes", "these waterproof running shoes",
                     "these carbon-plated racing shoes", "these budget running shoes from a sports chain",
                     "these running shoes for heavier runners", "these neutral running shoes from a small brand",
                     "these stability running shoes", "these winter running shoes with studs",
                     "these running shoes made from recycled material", "these running shoes for track sessions"],
        "openings": ["I bought {s} in May and have run about two hundred kilometres in them. The {a}",
                     "I trained for a half marathon in {s} over the spring. The {a}",
                     "I have run in {s} every morning for six weeks. The {a}",
                     "My running coach suggested {s}, so I ordered a pair online. The {a}"],
        "aspects": {
            "cushioning": (False, {
                "pos": ["was wonderfully soft and my knees felt great"],
                "neg": ["was harsh and my knees ached after every run"],
                "neu": ["was firmer at the heel than at the front"]}),
            "grip": (False, {
                "pos": ["was superb on wet roads and muddy trails"],
                "neg": ["was poor and I slipped twice on wet stones"],
                "neu": ["came from small rubber studs along the outer edge"]}),
            "sizing": (False, {
                "pos": ["was perfect straight out of the box"],
                "neg": ["was too narrow and gave me painful blisters"],
                "neu": ["was about half a size larger than my old pair"]}),
            "laces": (True, {
                "pos": ["were great and stayed tied for every run"],
                "neg": ["came undone constantly, which was infuriating"],
                "neu": ["were flat and a little longer than usual"]}),
            "sole": (False, {
                "pos": ["was durable and still looks new after months"],
                "neg": ["wore through in a few weeks, which is ridiculous"],
                "neu": ["was white with a grey stripe along the side"]}),
            "upper": (False, {
                "pos": ["was breathable and comfortable on hot days"],
                "neg": ["tore near the toe after only ten runs"],
                "neu": ["was made of a thin mesh in two colours"]}),
        },
        "closers": {
            "pos": ["They are the best shoes I have owned.", "I have already ordered a second pair.",
                    "My runs feel easier and more enjoyable."],
            "neg": ["I went back to my old pair.", "They were a painful mistake.", "I would not buy them again."],
            "neu": ["They weigh about two hundred and fifty grams each.", "They come in six colours.",
                    "I run mostly on roads and park paths.", "I wear them with thin socks."],
        },
    },
    "museum": {
        "subjects": ["this maritime museum by the docks", "this small local history museum",
                     "this modern art gallery in a former power station", "this science museum with a planetarium",
                     "this museum of clocks and watches", "this railway museum in an old engine shed",
                     "this museum of fossils and minerals", "this photography gallery on the fifth floor of the library",
                     "this castle museum on the hill", "this open-air museum of old farm buildings",
                     "this museum of design", "this toy museum in a townhouse",
                     "this archaeology museum near the university", "this museum of musical instruments"],
        "openings": ["We visited {s} on a wet Saturday in October. The {a}",
                     "I spent an afternoon at {s} during a trip with my parents. The {a}",
                     "Our school group went to {s} on a weekday morning. The {a}",
                     "I went to {s} on the first day it reopened after renovation. The {a}"],
        "aspects": {
            "exhibits": (True, {
                "pos": ["were fascinating and beautifully displayed"],
                "neg": ["were dusty, badly lit and poorly labelled"],
                "neu": ["were arranged by date across three floors"]}),
            "guided tour": (False, {
                "pos": ["was fantastic, and our guide was funny and knowledgeable"],
                "neg": ["was a boring lecture by a guide who clearly hated the job"],
                "neu": ["started at eleven and lasted about fifty minutes"]}),
            "audio guide": (False, {
                "pos": ["was excellent and full of interesting stories"],
                "neg": ["was broken and the staff could not fix it"],
                "neu": ["was available in four languages at the front desk"]}),
            "cafe": (False, {
                "pos": ["was lovely, with delicious cakes and a nice view"],
                "neg": ["was overpriced and the sandwiches were stale"],
                "neu": ["was on the ground floor next to the cloakroom"]}),
            "signs": (True, {
                "pos": ["were clear and helpful, so finding our way was easy"],
                "neg": ["were confusing and we wasted half an hour lost"],
                "neu": ["were in English and Dutch, with small maps"]}),
            "layout": (False, {
                "pos": ["was clever and made the visit a joy"],
                "neg": ["was a frustrating maze with dead ends"],
                "neu": ["went from the oldest rooms on the ground floor to the newest on top"]}),
        },
        "closers": {
            "pos": ["We had a wonderful day out.", "I would happily go again.", "The children loved it."],
            "neg": ["We left after an hour, bored and annoyed.", "It was not worth the ticket price.",
                    "I would not go back."],
            "neu": ["Tickets can be bought at the door.", "It is closed on Mondays.",
                    "The visit took about two hours.", "There is a bus stop right outside."],
        },
    },
    "train journey": {
        "subjects": ["this overnight train from Vienna to Venice", "this morning train from Edinburgh to London",
                     "this regional train along the coast", "this high-speed train to Paris",
                     "this mountain railway in Switzerland", "this sleeper train to the far north",
                     "this commuter train into the city", "this branch line through the valley",
                     "this cross-border train to Brussels", "this four-hour train across the plains",
                     "this heritage steam train", "this night train to Budapest", "this airport express train",
                     "this intercity train from Madrid to Seville"],
        "openings": ["I took {s} in September with one small suitcase. The {a}",
                     "We booked seats on {s} for a family trip in the summer. The {a}",
                     "I travel on {s} about twice a month for work, and last week was typical. The {a}",
                     "I rode {s} for the first time last month, in second class. The {a}"],
        "aspects": {
            "seats": (True, {
                "pos": ["were roomy and comfortable, with plenty of legroom"],
                "neg": ["were cramped, worn and stained"],
                "neu": ["were arranged in pairs facing a small table"]}),
            "conductor": (False, {
                "pos": ["was cheerful and helped us with our bags"],
                "neg": ["was rude and shouted at a confused passenger"],
                "neu": ["checked our tickets shortly after the second stop"]}),
            "buffet car": (False, {
                "pos": ["served excellent coffee and tasty sandwiches"],
                "neg": ["was closed the whole way, which was annoying"],
                "neu": ["was in the middle of the train and took cards only"]}),
            "views": (True, {
                "pos": ["were breathtaking, especially along the river"],
                "neg": ["were blocked by filthy windows the whole way"],
                "neu": ["were mostly of fields and small towns"]}),
            "wifi": (False, {
                "pos": ["was fast and reliable, so I got lots of work done"],
                "neg": ["was useless and kept dropping every few minutes"],
                "neu": ["needed an email address to log in"]}),
            "carriage": (False, {
                "pos": ["was spotless, quiet and pleasantly warm"],
                "neg": ["was dirty, crowded and freezing cold"],
                "neu": ["had space for luggage at both ends"]}),
        },
        "closers": {
            "pos": ["It was a delightful way to travel.", "I will happily take it again.",
                    "We arrived relaxed and happy."],
            "neg": ["We arrived late, tired and angry.", "I will fly next time.", "It was a miserable journey."],
            "neu": ["The journey took just under five hours.", "We changed trains once on the way.",
                    "Tickets were bought online a month ahead.", "The train left from platform four."],
        },
    },
}

# Predicates that fit any aspect ({be}: was / were) and closing remarks that fit any category.
GENERIC_PREDICATES = {
    "pos": ["{be} better than I expected", "{be} a real highlight", "{be} excellent in every way",
            "{be} honestly the best part", "{be} lovely, much nicer than I had hoped"],
    "neg": ["{be} worse than I expected", "{be} a real disappointment", "{be} poor in almost every way",
            "{be} honestly the worst part", "{be} awful, much worse than I had feared"],
    "neu": ["{be} about what I expected", "{be} similar to the last one I tried", "{be} the first thing I noticed",
            "{be} described in detail on the website", "{be} as shown in the photos"],
}
GENERIC_CLOSERS = {
    "pos": ["Overall, a very pleasant experience.", "Five stars from me.", "Highly recommended."],
    "neg": ["Overall, a very unpleasant experience.", "One star from me.", "Not recommended."],
    "neu": ["I wrote this review a week later.", "Three stars from me.", "More details are in the photos below.",
            "I have nothing more to add for now."],
}

_ANALYZER = SentimentIntensityAnalyzer()


def compound(text: str) -> float:
    return _ANALYZER.polarity_scores(text)["compound"] if text.strip() else 0.0


def sentiment_class(score: float) -> str:
    """VADER's usual thresholds: positive >= 0.05, negative <= -0.05, neutral (or mixed) in between."""
    return "pos" if score >= 0.05 else "neg" if score <= -0.05 else "neu"


def n_words(text: str) -> int:
    return len(text.split())


def build_openings(seed: int = 0) -> list[dict]:
    """Every opening, with its category, subject, aspect and split (train / eval / test, disjoint by subject)."""
    rng = random.Random(seed)
    per_split: dict[str, list[list[dict]]] = {"train": [], "eval": [], "test": []}
    for category, spec in CATEGORIES.items():
        subjects = list(spec["subjects"])
        rng.shuffle(subjects)
        split_of = {s: "test" if k < 4 else "eval" if k < 6 else "train" for k, s in enumerate(subjects)}
        groups: dict[str, list[dict]] = {"train": [], "eval": [], "test": []}
        for subject in subjects:
            aspects = rng.sample(sorted(spec["aspects"]), len(spec["openings"]))
            for template, aspect in zip(spec["openings"], aspects):
                groups[split_of[subject]].append({"category": category, "subject": subject, "aspect": aspect,
                                                  "split": split_of[subject],
                                                  "prompt": template.format(s=subject, a=aspect)})
        for name, rows in groups.items():
            per_split[name].append(rows)
    train = [row for rows in per_split["train"] for row in rows]
    rng.shuffle(train)
    # eval and test: one category after another, so that any prefix spans the categories
    interleave = lambda lists: [r for group in itertools.zip_longest(*lists) for r in group if r is not None]  # noqa: E731
    return train + interleave(per_split["eval"]) + interleave(per_split["test"])


def _predicate(category: str, aspect: str, cls: str, rng: random.Random, avoid: str = "") -> str:
    """A predicate for the aspect: its own (more often) or a generic one; never the template ``avoid``."""
    plural, own = CATEGORIES[category]["aspects"][aspect]
    generic = [p for p in GENERIC_PREDICATES[cls] if p != avoid]
    if rng.random() < 0.6:
        return rng.choice(own[cls])
    return rng.choice(generic).format(be="were" if plural else "was")


def _template_of(predicate: str) -> str:
    """The generic template a predicate was made from ("" for an aspect's own predicate)."""
    for templates in GENERIC_PREDICATES.values():
        for template in templates:
            if predicate in (template.format(be="was"), template.format(be="were")):
                return template
    return ""


def _second_sentence(category: str, aspect: str, cls: str, rng: random.Random, first: str) -> str:
    """A closing remark, or a sentence about another aspect of the same category."""
    if rng.random() < 0.4:
        other = rng.choice([a for a in sorted(CATEGORIES[category]["aspects"]) if a != aspect])
        return f"The {other} {_predicate(category, other, cls, rng, avoid=_template_of(first))}."
    return rng.choice(CATEGORIES[category]["closers"][cls] + GENERIC_CLOSERS[cls])


def _candidate(item: dict, cls: str, rng: random.Random) -> str:
    category, aspect = item["category"], item["aspect"]
    if cls == "neu" and rng.random() < 0.3:  # mixed: a positive and a negative half that VADER must balance
        first, second = rng.sample(["pos", "neg"], 2)
    else:
        first = cls
        second = cls if rng.random() < 0.6 else "neu"
    predicate = _predicate(category, aspect, first, rng)
    form = rng.random()
    if form < 0.15 and n_words(predicate) >= MIN_WORDS and first == cls:
        return f" {predicate}."  # one sentence
    sentence = _second_sentence(category, aspect, second, rng, predicate)
    if form < 0.35 and " and " not in predicate and sentence.split()[0] in ("I", "We", "It", "They", "The"):
        joined = sentence if sentence.startswith("I ") else sentence[0].lower() + sentence[1:]
        return f" {predicate}, and {joined}"  # one sentence, two clauses
    return f" {predicate}. {sentence}"  # two sentences


def continuation(item: dict, cls: str, rng: random.Random) -> tuple[str, float]:
    """A continuation of the opening whose VADER class is ``cls`` (8-25 words), and its compound."""
    for _ in range(500):
        text = _candidate(item, cls, rng)
        score = compound(text)
        if MIN_WORDS <= n_words(text) <= MAX_WORDS and sentiment_class(score) == cls:
            return text, score
    raise RuntimeError(f"no {cls} continuation found for {item['prompt']!r}")


# (chosen's class, rejected's class); the last two are graded pairs within one class
PAIR_KINDS = [("pos", "neg"), ("pos", "neu"), ("neu", "neg"), ("pos", "pos"), ("neg", "neg")]


def make_pair(item: dict, kind: tuple[str, str], chosen_longer: bool, rng: random.Random) -> dict:
    """Chosen has the higher compound by >= PAIR_MARGIN; ``chosen_longer`` decides which one is longer."""
    for _ in range(1000):
        chosen, c_score = continuation(item, kind[0], rng)
        rejected, r_score = continuation(item, kind[1], rng)
        if c_score >= r_score + PAIR_MARGIN and len(chosen) != len(rejected) and \
                (len(chosen) > len(rejected)) == chosen_longer:
            return {"prompt": item["prompt"], "chosen": chosen, "rejected": rejected}
    raise RuntimeError(f"no {kind} pair found for {item['prompt']!r}")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ASSETS, help="output folder (default: the package's assets/data)")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    openings = build_openings(args.seed)
    for item in openings:
        score = compound(item["prompt"])
        assert abs(score) < 0.05, f"opening is not neutral ({score}): {item['prompt']!r}"
        assert 12 <= n_words(item["prompt"]) <= 30, f"opening length {n_words(item['prompt'])}: {item['prompt']!r}"
        assert not item["prompt"].endswith((" ", ".")), item["prompt"]
    subjects = {split: {i["subject"] for i in openings if i["split"] == split} for split in ("train", "eval", "test")}
    assert not (subjects["train"] & subjects["eval"] or subjects["train"] & subjects["test"]
                or subjects["eval"] & subjects["test"])
    train = [i for i in openings if i["split"] == "train"]

    # SFT: one or two continuations per train opening, the VADER classes in equal thirds
    n_per_opening = [1 + (rng.random() < 0.5) for _ in train]
    targets = [CLASSES[k % 3] for k in range(sum(n_per_opening))]
    rng.shuffle(targets)
    sft, classes = [], []
    for item, n in zip(train, n_per_opening):
        for _ in range(n):
            cls = targets[len(sft)]
            text, _ = continuation(item, cls, rng)
            sft.append({"prompt": item["prompt"], "completion": text})
            classes.append(cls)

    # preference pairs: one or two per train opening, kinds in turn, a balanced coin for which one is longer
    n_pairs = [1 + (rng.random() < 0.5) for _ in train]
    coins = [k % 2 == 0 for k in range(sum(n_pairs))]
    rng.shuffle(coins)
    pairs = []
    for item, n in zip(train, n_pairs):
        for _ in range(n):
            pairs.append(make_pair(item, PAIR_KINDS[len(pairs) % len(PAIR_KINDS)], coins[len(pairs)], rng))
    rng.shuffle(pairs)

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "sentiment_sft.jsonl", sft)
    write_jsonl(out / "sentiment_prompts.jsonl", [{"prompt": i["prompt"]} for i in train])
    write_jsonl(out / "sentiment_eval.jsonl", [{"prompt": i["prompt"]} for i in openings if i["split"] == "eval"])
    write_jsonl(out / "sentiment_test.jsonl", [{"prompt": i["prompt"]} for i in openings if i["split"] == "test"])
    write_jsonl(out / "sentiment_preferences.jsonl", pairs)
    # held-out pairs (two per eval opening, drawn after everything above so the other files do not depend on
    # them): the reward model's held-out report
    evals = [i for i in openings if i["split"] == "eval"]
    eval_coins = [k % 2 == 0 for k in range(2 * len(evals))]
    rng.shuffle(eval_coins)
    eval_pairs = [make_pair(item, PAIR_KINDS[(2 * n + r) % len(PAIR_KINDS)], eval_coins[2 * n + r], rng)
                  for n, item in enumerate(evals) for r in range(2)]
    rng.shuffle(eval_pairs)
    write_jsonl(out / "sentiment_preferences_eval.jsonl", eval_pairs)

    vader = [sentiment_class(compound(row["completion"])) for row in sft]  # as VADER classifies them
    assert vader == classes
    mix = {c: vader.count(c) / len(vader) for c in CLASSES}
    longer = sum(len(p["chosen"]) > len(p["rejected"]) for p in pairs) / len(pairs)
    count = {split: sum(i["split"] == split for i in openings) for split in ("eval", "test")}
    print(f"openings: {len(openings)} (train {len(train)}, eval {count['eval']}, test {count['test']}); "
          f"subjects train/eval/test: "
          f"{len(subjects['train'])}/{len(subjects['eval'])}/{len(subjects['test'])}")
    print(f"sft: {len(sft)} rows, VADER mix positive {mix['pos']:.3f}, negative {mix['neg']:.3f}, "
          f"neutral/mixed {mix['neu']:.3f}; distinct responses: {len({r['completion'] for r in sft})}")
    print(f"preferences: {len(pairs)} pairs, longer response is the chosen one in {longer:.3f} of pairs")
    eval_longer = sum(len(p["chosen"]) > len(p["rejected"]) for p in eval_pairs) / len(eval_pairs)
    print(f"held-out preferences: {len(eval_pairs)} pairs, longer is chosen in {eval_longer:.3f} of pairs")
    assert 0.4 <= eval_longer <= 0.6, f"held-out length is informative ({eval_longer:.3f})"
    assert all(0.25 <= share <= 0.42 for share in mix.values()), mix
    assert 0.45 <= longer <= 0.55, f"length is informative ({longer:.3f})"


if __name__ == "__main__":
    main()
