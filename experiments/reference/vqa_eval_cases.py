"""Writes tests/fixtures/vqa/eval_cases.json: hard cases for VQA answer normalisation and
accuracy, scored with the official VQA evaluation algorithm.

The algorithm is that of the official evaluation script, PythonEvaluationTools/vqaEvaluation/
vqaEval.py in github.com/GT-Vision-Lab/VQA (processPunctuation, processDigitArticle and the
accuracy loop of VQAEval.evaluate), rewritten here for Python 3 with the semantics the
official Python 2 script has on the dataset's text:
- `\\d` is ASCII [0-9] (Python 2's `re` without the UNICODE flag);
- the period strip removes at most 32 periods (the script passes re.UNICODE, 32, as `count`);
- a prediction is stripped, punctuation-processed and digit/article-processed; the ten human
  answers are punctuation-processed only, and only when they are not all the same;
- a question's accuracy is the mean over the ten leave-one-out subsets of
  min(1, matching answers among the other nine / 3).

Run: python3 experiments/reference/vqa_eval_cases.py  (standard library only; seeded).
"""
import json
import os
import random
import re

CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn’t’ve", "couldnt’ve": "couldn’t’ve",
    "didnt": "didn’t", "doesnt": "doesn’t", "dont": "don’t", "hadnt": "hadn’t",
    "hadnt’ve": "hadn’t’ve", "hadn'tve": "hadn’t’ve", "hasnt": "hasn’t", "havent": "haven’t",
    "hed": "he’d", "hed’ve": "he’d’ve", "he’dve": "he’d’ve", "hes": "he’s", "howd": "how’d",
    "howll": "how’ll", "hows": "how’s", "Id’ve": "I’d’ve", "I’dve": "I’d’ve", "Im": "I’m",
    "Ive": "I’ve", "isnt": "isn’t", "itd": "it’d", "itd’ve": "it’d’ve", "it’dve": "it’d’ve",
    "itll": "it’ll", "let’s": "let’s", "maam": "ma’am", "mightnt": "mightn’t",
    "mightnt’ve": "mightn’t’ve", "mightn’tve": "mightn’t’ve", "mightve": "might’ve",
    "mustnt": "mustn’t", "mustve": "must’ve", "neednt": "needn’t", "notve": "not’ve",
    "oclock": "o’clock", "oughtnt": "oughtn’t", "ow’s’at": "’ow’s’at", "’ows’at": "’ow’s’at",
    "’ow’sat": "’ow’s’at", "shant": "shan’t", "shed’ve": "she’d’ve", "she’dve": "she’d’ve",
    "she’s": "she’s", "shouldve": "should’ve", "shouldnt": "shouldn’t",
    "shouldnt’ve": "shouldn’t’ve", "shouldn’tve": "shouldn’t’ve", "somebody’d": "somebodyd",
    "somebodyd’ve": "somebody’d’ve", "somebody’dve": "somebody’d’ve",
    "somebodyll": "somebody’ll", "somebodys": "somebody’s", "someoned": "someone’d",
    "someoned’ve": "someone’d’ve", "someone’dve": "someone’d’ve", "someonell": "someone’ll",
    "someones": "someone’s", "somethingd": "something’d", "somethingd’ve": "something’d’ve",
    "something’dve": "something’d’ve", "somethingll": "something’ll", "thats": "that’s",
    "thered": "there’d", "thered’ve": "there’d’ve", "there’dve": "there’d’ve",
    "therere": "there’re", "theres": "there’s", "theyd": "they’d", "theyd’ve": "they’d’ve",
    "they’dve": "they’d’ve", "theyll": "they’ll", "theyre": "they’re", "theyve": "they’ve",
    "twas": "’twas", "wasnt": "wasn’t", "wed’ve": "we’d’ve", "we’dve": "we’d’ve",
    "weve": "we've", "werent": "weren’t", "whatll": "what’ll", "whatre": "what’re",
    "whats": "what’s", "whatve": "what’ve", "whens": "when’s", "whered": "where’d",
    "wheres": "where's", "whereve": "where’ve", "whod": "who’d", "whod’ve": "who’d’ve",
    "who’dve": "who’d’ve", "wholl": "who’ll", "whos": "who’s", "whove": "who've",
    "whyll": "why’ll", "whyre": "why’re", "whys": "why’s", "wont": "won’t",
    "wouldve": "would’ve", "wouldnt": "wouldn’t", "wouldnt’ve": "wouldn’t’ve",
    "wouldn’tve": "wouldn’t’ve", "yall": "y’all", "yall’ll": "y’all’ll", "y’allll": "y’all’ll",
    "yall’d’ve": "y’all’d’ve", "y’alld’ve": "y’all’d’ve", "y’all’dve": "y’all’d’ve",
    "youd": "you’d", "youd’ve": "you’d’ve", "you’dve": "you’d’ve", "youll": "you’ll",
    "youre": "you’re", "youve": "you’ve",
}
MANUAL_MAP = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
              "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
ARTICLES = ["a", "an", "the"]
PERIOD_STRIP = re.compile(r"\.(?![0-9])")
COMMA_STRIP = re.compile(r"([0-9])(,)([0-9])")
PUNCT = [";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@",
         "`", ",", "?"]


def process_punctuation(text):
    out = text
    for p in PUNCT:
        if (p + " " in text or " " + p in text) or COMMA_STRIP.search(text) is not None:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    return PERIOD_STRIP.sub("", out, count=32)


def process_digit_article(text):
    words = []
    for word in text.lower().split():
        word = MANUAL_MAP.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalise_prediction(answer):
    answer = answer.replace("\n", " ").replace("\t", " ").strip()
    return process_digit_article(process_punctuation(answer))


def accuracy(prediction, answers):
    prediction = normalise_prediction(prediction)
    if len(set(answers)) > 1:
        answers = [process_punctuation(a) for a in answers]
    scores = []
    for left_out in range(len(answers)):
        others = answers[:left_out] + answers[left_out + 1:]
        scores.append(min(1.0, sum(1 for a in others if a == prediction) / 3.0))
    return sum(scores) / len(scores)


HAND_WRITTEN = [
    "Two", "two.", "TWO!", "2.5", "2.", "1,000", "1,000 people", "a dog", "The Dog", "an apple",
    "the the", "yes.", "Yes", "no, it isn't", "dont", "don't", "isnt", "wont", "whats up",
    "it's", "3 dogs?", "right/left", "right / left", "(blue)", "( blue )", "mr. smith",
    "the... end", "10:30", "10: 30", "1.5.", "a.b.c", "What's that", "a b an the",
    "\tyes\n", "  spaced   out  ", "none", "zero dogs", "ten", "eleven", "red;blue",
    "red; blue", "\"quoted\"", "'single'", "@home", "c++", "<none>", "a_b", "x=y",
    "hi`there", "why?", "why ?", "I'm", "Im", "oclock", "shes", "Ive", "ya'll", "yall",
    "0.5.", "." * 40 + "x", "5 . 5", "예", "아니요", "두 개", "빨간색.", "USA", "U.S.A.",
    "1,2,3", "1, 2, 3", "left-hand", "tennis racket!", "o'clock", "can't", "cant",
]

WORDS = ["yes", "no", "two", "2", "the", "a", "dog", "red", "left", "isnt", "dont", "one",
         "1,000", "3.5", "mr", "U.S.", "tennis", "racket", "예", "개"]
MARKS = ["", "", "", ".", ",", "?", "!", "'", ";", ":", "/", "(", ")", "-", "\"", " "]


def random_answer(rng):
    parts = []
    for _ in range(rng.randint(1, 4)):
        word = rng.choice(WORDS)
        if rng.random() < 0.3:
            word = word.upper() if rng.random() < 0.5 else word.capitalize()
        parts.append(rng.choice(MARKS) + word + rng.choice(MARKS))
    return rng.choice([" ", " ", "  ", ""]).join(parts)


def main():
    rng = random.Random(2015)
    inputs = HAND_WRITTEN + [random_answer(rng) for _ in range(200)]
    normalisation = [{"input": text, "punctuation": process_punctuation(text),
                      "prediction": normalise_prediction(text)} for text in inputs]
    cases = []
    for _ in range(120):
        truth = rng.choice(["yes", "no", "2", "red", "dog", "1,000", "tennis racket", "left"])
        variants = [truth, truth + ".", truth.capitalize(), "(" + truth + ")", truth + "?",
                    random_answer(rng)]
        n_distinct = rng.choice([1, 1, 2, 3, 6])
        answers = [rng.choice(variants[:n_distinct]) if rng.random() < 0.8 else
                   rng.choice(["yes", "no", "2", "3", "blue"]) for _ in range(10)]
        if rng.random() < 0.25:
            answers = [truth] * 10
        prediction = rng.choice([truth, truth.upper() + ".", "the " + truth, random_answer(rng),
                                 rng.choice(answers), "two" if truth == "2" else truth + "s"])
        cases.append({"prediction": prediction, "answers": answers,
                      "accuracy": accuracy(prediction, answers)})
    overall = sum(case["accuracy"] for case in cases) / len(cases)
    out = {
        "source": "official VQA evaluation (github.com/GT-Vision-Lab/VQA, "
                  "PythonEvaluationTools/vqaEvaluation/vqaEval.py), by "
                  "experiments/reference/vqa_eval_cases.py, seed 2015",
        "normalisation": normalisation, "accuracy": cases, "overall": overall,
    }
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "vqa",
                        "eval_cases.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(normalisation)} normalisation and {len(cases)} accuracy cases "
          f"(overall {100 * overall:.2f}) to {os.path.normpath(path)}")


if __name__ == "__main__":
    main()
