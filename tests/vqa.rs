//! Question-answering data: VQA accuracy against the official evaluation script's values, and
//! each official format (VQA v2, GQA, NLVR2) read from small fixtures, bad entries included.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use vislang::data::vqa::answers::{normalise_human_answers, process_punctuation};
use vislang::data::vqa::{
    gqa, nlvr2, normalise_prediction, vqa_accuracy, vqa_v2, AnswerVocabulary, ImageKey,
};
use vislang::data::{BadEntryPolicy, DataError};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/vqa")
        .join(name)
}

#[derive(Deserialize)]
struct EvalCases {
    source: String,
    normalisation: Vec<NormalisationCase>,
    accuracy: Vec<AccuracyCase>,
    overall: f64,
}

#[derive(Deserialize)]
struct NormalisationCase {
    input: String,
    punctuation: String,
    prediction: String,
}

#[derive(Deserialize)]
struct AccuracyCase {
    prediction: String,
    answers: Vec<String>,
    accuracy: f64,
}

fn eval_cases() -> EvalCases {
    let text = std::fs::read_to_string(fixture("eval_cases.json")).expect("fixture");
    serde_json::from_str(&text).expect("fixture parses")
}

/// Every string the official script produces, exactly: punctuation alone, and a prediction's
/// whole normalisation (digits, articles, contractions).
#[test]
fn answer_normalisation_equals_the_official_script() {
    let cases = eval_cases();
    assert!(cases.source.contains("GT-Vision-Lab/VQA"));
    assert!(cases.normalisation.len() > 200);
    let mut wrong = Vec::new();
    for case in &cases.normalisation {
        let punctuation = process_punctuation(&case.input);
        let prediction = normalise_prediction(&case.input);
        if punctuation != case.punctuation || prediction != case.prediction {
            wrong.push(format!(
                "{:?}: punctuation {punctuation:?} (script {:?}), prediction {prediction:?} (script {:?})",
                case.input, case.punctuation, case.prediction
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} differ:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// Per question within 1e-12 (both are sums of a few thirds in f64), and overall.
#[test]
fn vqa_accuracy_equals_the_official_script() {
    let cases = eval_cases();
    let mut total = 0.0;
    for case in &cases.accuracy {
        let humans = normalise_human_answers(&case.answers);
        let accuracy = vqa_accuracy(&case.prediction, &humans);
        assert!(
            (accuracy - case.accuracy).abs() <= 1e-12,
            "{:?} against {:?}: {accuracy}, script {}",
            case.prediction,
            case.answers,
            case.accuracy
        );
        total += accuracy;
    }
    let overall = total / cases.accuracy.len() as f64;
    assert!(
        (overall - cases.overall).abs() <= 1e-12,
        "{overall} vs {}",
        cases.overall
    );
}

#[test]
fn vqa_v2_files_join_questions_and_annotations() {
    let split = vqa_v2::read(
        &fixture(&vqa_v2::questions_file("val2014")),
        Some(&fixture(&vqa_v2::annotations_file("val2014"))),
        BadEntryPolicy::Fail,
    )
    .expect("reads");
    assert_eq!(split.examples.len(), 4);
    assert!(split.skipped.skipped.is_empty());
    let first = &split.examples[0];
    assert_eq!(first.question_id, "10");
    assert_eq!(first.images, vec![ImageKey::Coco(1)]);
    assert_eq!(first.answers.len(), 10);
    assert_eq!(first.question_type, "how many");
    assert_eq!(first.answer_type, "number");

    // The vocabulary counts each question's most common normalised answer: "two" is "2".
    let vocabulary = AnswerVocabulary::from_training(&split.examples, 1);
    assert_eq!(vocabulary.len(), 4);
    let targets = vocabulary.soft_targets(first);
    let two = vocabulary.index_of("2").expect("2 is in the vocabulary");
    let at = targets
        .indices
        .iter()
        .position(|&i| i == two)
        .expect("target for 2");
    assert_eq!(targets.scores[at], 1.0);
    // "3" was given once, and is not in the vocabulary: no target for it.
    assert_eq!(vocabulary.index_of("3"), None);
    // The red bus: "Red." normalises to "red", so 8 of 10 humans agree.
    let bus = &split.examples[2];
    let humans = normalise_human_answers(&bus.answers);
    assert_eq!(vqa_accuracy("red", &humans), 1.0);
    assert!((vqa_accuracy("dark red", &humans) - 0.3).abs() < 1e-12);
    // With min count 2 no answer is common enough.
    assert!(AnswerVocabulary::from_training(&split.examples, 2).is_empty());
}

#[test]
fn vqa_v2_bad_entries_are_named_or_skipped() {
    let questions = fixture(&vqa_v2::questions_file("val2014"));
    let bad = fixture("bad_v2_mscoco_val2014_annotations.json");
    let error = vqa_v2::read(&questions, Some(&bad), BadEntryPolicy::Fail).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, DataError::BadQuestion { .. }), "{message}");
    assert!(
        message.contains("bad_v2_mscoco_val2014_annotations.json"),
        "{message}"
    );
    assert!(
        message.contains("question 30") && message.contains("empty answer list"),
        "{message}"
    );

    let split = vqa_v2::read(&questions, Some(&bad), BadEntryPolicy::Skip).expect("skips");
    // Kept: 10 and 11. Skipped: 30's empty answers (and so 30 has no annotation), the
    // annotation of 40 without a question, and 20's image mismatch.
    let kept: Vec<&str> = split
        .examples
        .iter()
        .map(|e| e.question_id.as_str())
        .collect();
    assert_eq!(kept, ["10", "11"]);
    let reasons: Vec<String> = split
        .skipped
        .skipped
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(reasons.len(), 4, "{reasons:#?}");
    assert!(reasons
        .iter()
        .any(|r| r.contains("question 40") && r.contains("without a question")));
    assert!(reasons
        .iter()
        .any(|r| r.contains("question 20") && r.contains("image 9")));

    // A question whose image is not on disk.
    let split = vqa_v2::read(&questions, None, BadEntryPolicy::Fail).expect("questions only");
    assert!(split.examples.iter().all(|e| e.answers.is_empty()));
    let known = |image: &ImageKey| *image != ImageKey::Coco(3);
    let error = vqa_v2::read(&questions, None, BadEntryPolicy::Fail)
        .unwrap()
        .check_images(&questions, &known, BadEntryPolicy::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("question 30") && error.contains("COCO image 3"),
        "{error}"
    );
    let checked = split
        .check_images(&questions, &known, BadEntryPolicy::Skip)
        .expect("skips");
    assert_eq!(checked.examples.len(), 3);
    assert_eq!(checked.skipped.skipped.len(), 1);
}

#[test]
fn malformed_json_names_the_file() {
    let dir = crate::common::tempdir();
    let path = dir.path().join(vqa_v2::questions_file("val2014"));
    std::fs::write(&path, "{\"questions\": [").unwrap();
    let error = vqa_v2::read(&path, None, BadEntryPolicy::Skip).unwrap_err();
    assert!(matches!(error, DataError::Json { .. }));
    assert!(error
        .to_string()
        .contains("v2_OpenEnded_mscoco_val2014_questions.json"));
    let missing = dir.path().join("val_balanced_questions.json");
    let error = gqa::read(&missing, BadEntryPolicy::Skip).unwrap_err();
    assert!(
        error.to_string().contains("val_balanced_questions.json"),
        "{error}"
    );
}

#[test]
fn gqa_balanced_questions_are_read_in_id_order() {
    let path = fixture(&gqa::questions_file("val"));
    let error = gqa::read(&path, BadEntryPolicy::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("question 0003") && error.contains("empty question"),
        "{error}"
    );
    let split = gqa::read(&path, BadEntryPolicy::Skip).expect("skips");
    let ids: Vec<&str> = split
        .examples
        .iter()
        .map(|e| e.question_id.as_str())
        .collect();
    assert_eq!(ids, ["0001", "0002"]);
    assert_eq!(split.skipped.skipped.len(), 2);
    let first = &split.examples[0];
    assert_eq!(first.images, vec![ImageKey::Named("n123".into())]);
    assert_eq!(first.answers, ["yes"]);
    assert_eq!(
        (first.question_type.as_str(), first.answer_type.as_str()),
        ("rel", "verify")
    );
    // One answer: full credit for it.
    let vocabulary = AnswerVocabulary::from_training(&split.examples, 1);
    assert_eq!(vocabulary.soft_targets(first).scores, [1.0]);
}

#[test]
fn nlvr2_lines_name_both_images() {
    let path = fixture("dev.json");
    let error = nlvr2::read(&path, BadEntryPolicy::Fail)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("dev.json") && error.contains("line 3"),
        "{error}"
    );
    let split = nlvr2::read(&path, BadEntryPolicy::Skip).expect("skips");
    assert_eq!(split.examples.len(), 2);
    let reasons: Vec<String> = split
        .skipped
        .skipped
        .iter()
        .map(|e| e.to_string())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(reasons
        .iter()
        .any(|r| r.contains("line 3") && r.contains("malformed JSON")));
    assert!(reasons.iter().any(|r| r.contains("\"maybe\"")));
    assert!(reasons.iter().any(|r| r.contains("nohyphen")));
    let first = &split.examples[0];
    assert_eq!(
        first.images,
        vec![
            ImageKey::Named("dev-850-0-img0".into()),
            ImageKey::Named("dev-850-0-img1".into())
        ]
    );
    assert_eq!(first.answers, [nlvr2::TRUE]);
    assert_eq!(split.examples[1].answers, [nlvr2::FALSE]);
}

/// The built-in question set: every type asked, answers that follow the instances, answer
/// noise that normalisation and VQA accuracy absorb, the same questions in Korean, and priors
/// that leave the picture to decide.
#[test]
fn built_in_questions_need_the_picture() {
    use std::collections::{BTreeMap, HashMap};
    use vislang::data::vqa::synthetic::{ensure_question_set, question_set_paths};
    use vislang::data::{
        write_synthetic_coco, CaptionLanguage, CocoDataset, CocoSplit, SyntheticCocoConfig,
    };

    let dir = crate::common::tempdir();
    let root = dir.path().join("set");
    let config = SyntheticCocoConfig {
        n_train: 300,
        n_val: 60,
        ..SyntheticCocoConfig::default()
    };
    write_synthetic_coco(&root, &config).unwrap();
    let load = |split| CocoDataset::load(&root, split, BadEntryPolicy::Fail).unwrap();
    let (train, val) = (load(CocoSplit::Train2014), load(CocoSplit::Val2014));
    let [train_files, _] =
        ensure_question_set(&root, &train, &val, 7, CaptionLanguage::English).unwrap();
    let split = vqa_v2::read(&train_files[0], Some(&train_files[1]), BadEntryPolicy::Fail).unwrap();
    let korean = question_set_paths(&root, CocoSplit::Train2014, CaptionLanguage::Korean);
    let korean = vqa_v2::read(&korean[0], Some(&korean[1]), BadEntryPolicy::Fail).unwrap();
    assert_eq!(split.examples.len(), korean.examples.len());

    let names: HashMap<u64, Vec<String>> = train
        .images
        .iter()
        .map(|image| {
            let names = image
                .objects
                .iter()
                .map(|o| train.categories[o.category].name.clone())
                .collect();
            (image.id, names)
        })
        .collect();
    let mut by_type: BTreeMap<String, Vec<&vislang::data::vqa::QaExample>> = BTreeMap::new();
    let mut full_credit = 0;
    for (english, korean) in split.examples.iter().zip(&korean.examples) {
        assert_eq!(english.question_id, korean.question_id);
        assert_eq!(english.question_type, korean.question_type);
        assert_eq!(english.answers.len(), 10);
        assert!(
            korean.question.chars().any(|c| ('가'..='힣').contains(&c)),
            "{}",
            korean.question
        );
        by_type
            .entry(english.question_type.clone())
            .or_default()
            .push(english);
        let humans = normalise_human_answers(&english.answers);
        let vocabulary = AnswerVocabulary::from_training(std::slice::from_ref(english), 1);
        if vqa_accuracy(vocabulary.answer(0), &humans) == 1.0 {
            full_credit += 1;
        }
        // Presence answers follow the instances file.
        if english.question_type == "presence" {
            let ImageKey::Coco(image) = english.images[0] else {
                panic!()
            };
            let named = english.question.trim_end_matches(" in the picture?");
            let category = named.rsplit(' ').next().unwrap();
            let present = names[&image].iter().any(|n| n == category);
            assert_eq!(
                vocabulary.answer(0),
                if present { "yes" } else { "no" },
                "{}",
                english.question
            );
        }
    }
    // Noise of 8% per human: the majority answer nearly always gets full credit.
    assert!(full_credit as f64 > 0.97 * split.examples.len() as f64);
    assert_eq!(
        by_type.keys().collect::<Vec<_>>(),
        ["color", "count", "position", "presence", "shape"]
    );
    // Every image is asked about presence and counts; yes and no are near even, and no count
    // or colour answer dominates its type.
    assert_eq!(by_type["presence"].len(), train.images.len());
    for (kind, examples) in &by_type {
        let vocabulary = AnswerVocabulary::from_training(
            &examples.iter().map(|e| (*e).clone()).collect::<Vec<_>>(),
            1,
        );
        let top = vocabulary.answer(0);
        let share = examples
            .iter()
            .filter(|e| {
                normalise_human_answers(&e.answers)
                    .iter()
                    .filter(|a| *a == top)
                    .count()
                    >= 5
            })
            .count() as f64
            / examples.len() as f64;
        let ceiling = match kind.as_str() {
            "presence" | "position" => 0.6,
            "count" => 0.45,
            _ => 0.3,
        };
        assert!(share < ceiling, "{kind}: {top:?} answers {share:.2}");
    }
    // Written once: a second call leaves the files as they are.
    let before = std::fs::metadata(&train_files[0])
        .unwrap()
        .modified()
        .unwrap();
    ensure_question_set(&root, &train, &val, 7, CaptionLanguage::English).unwrap();
    assert_eq!(
        before,
        std::fs::metadata(&train_files[0])
            .unwrap()
            .modified()
            .unwrap()
    );
}

fn finetune_vqa(dir: &Path, extra: &[&str]) -> std::process::Command {
    finetune_vqa_into(dir, "out", extra)
}

fn finetune_vqa_into(dir: &Path, out: &str, extra: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_finetune-vqa"));
    command
        .args([
            "--quiet",
            "--synthetic-train",
            "400",
            "--synthetic-val",
            "80",
            "--seeds",
            "0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--out")
        .arg(dir.join(out))
        .args(extra);
    command
}

fn results_of(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("results.json")).unwrap()).unwrap()
}

/// An experiment killed after its first committed epoch and run again gives the result of one
/// that was never interrupted (same losses and accuracy per epoch, within 1e-4).
#[test]
fn an_interrupted_finetuning_resumes_and_matches_an_uninterrupted_one() {
    let dir = crate::common::tempdir();
    let args = ["--models", "joint", "--epochs", "3", "--jobs", "1"];
    crate::common::run(finetune_vqa_into(dir.path(), "reference", &args));
    crate::common::kill_once_exists(
        finetune_vqa_into(dir.path(), "interrupted", &args),
        &dir.path().join("interrupted/runs/joint-seed0/state.json"),
    );
    let interrupted = dir.path().join("interrupted");
    assert!(
        !interrupted.join("results.json").exists(),
        "killed before finishing"
    );
    let output = crate::common::run(finetune_vqa_into(dir.path(), "interrupted", &args));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("resuming after epoch"), "{stderr}");
    let (a, b) = (
        results_of(&dir.path().join("reference")),
        results_of(&interrupted),
    );
    let history = |r: &serde_json::Value| r["runs"][0]["history"].as_array().unwrap().clone();
    assert_eq!(history(&a).len(), 3);
    for (x, y) in history(&a).iter().zip(history(&b)) {
        for key in ["/train/total", "/eval/loss", "/eval/accuracy"] {
            let (x, y) = (
                x.pointer(key).unwrap().as_f64().unwrap(),
                y.pointer(key).unwrap().as_f64().unwrap(),
            );
            assert!((x - y).abs() < 1e-4, "{key}: {x} vs {y}");
        }
    }
    assert!(
        interrupted.join("report.html").is_file() && interrupted.join("per-type.png").is_file()
    );
}

/// GQA on the built-in set: the joint model's exact-match accuracy beats the answer prior by
/// more than 5 points after 4 epochs on 400 images, and the predictions are in GQA's
/// submission format.
#[test]
fn gqa_finetuning_beats_the_answer_prior_and_writes_gqa_predictions() {
    let dir = crate::common::tempdir();
    crate::common::run(finetune_vqa(
        dir.path(),
        &[
            "--task", "gqa", "--models", "joint", "--epochs", "4", "--jobs", "1",
        ],
    ));
    let results = results_of(&dir.path().join("out"));
    let accuracy = |row: usize| {
        results["summary"][row]["accuracy"]["mean"]
            .as_f64()
            .unwrap()
    };
    let (prior, joint) = (accuracy(0), accuracy(1));
    assert!(
        joint > prior + 0.05,
        "joint {joint:.3}, answer prior {prior:.3}"
    );
    let predictions: Vec<serde_json::Value> = serde_json::from_slice(
        &std::fs::read(dir.path().join("out/runs/joint-seed0/predictions.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        predictions.len() as u64,
        results["eval_questions"].as_u64().unwrap()
    );
    assert!(predictions[0]["questionId"].is_string() && predictions[0]["prediction"].is_string());
}

/// NLVR2 on the built-in set: both families read the image pair (LXMERT's head takes two pooled
/// outputs), train, and write NLVR2's `identifier,True|False` predictions.
#[test]
fn nlvr2_reads_image_pairs_and_writes_nlvr2_predictions() {
    let dir = crate::common::tempdir();
    crate::common::run(finetune_vqa(
        dir.path(),
        &[
            "--task",
            "nlvr2",
            "--models",
            "joint,lxmert",
            "--epochs",
            "1",
        ],
    ));
    let results = results_of(&dir.path().join("out"));
    assert_eq!(results["answers"], 2);
    for run in ["joint-seed0", "lxmert-seed0"] {
        let run_dir = dir.path().join("out/runs").join(run);
        let csv = std::fs::read_to_string(run_dir.join("predictions.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines.len() as u64,
            results["eval_questions"].as_u64().unwrap()
        );
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with("dev-") && (l.ends_with(",True") || l.ends_with(",False"))),
            "{}",
            lines[0]
        );
        let config = std::fs::read_to_string(run_dir.join("model-config.json")).unwrap();
        let pairs = if run.starts_with("joint") {
            "\"images_per_input\": 2"
        } else {
            "\"images_per_question\": 2"
        };
        assert!(config.contains(pairs), "{config}");
    }
}

/// Fine-tuning learns: after 4 epochs on 400 images (about 1,900 questions), the joint model's
/// VQA accuracy beats the answer prior (the most common training answer of each question type)
/// by more than 8 points; it writes a submission file for every held-out question, and a
/// second run of the same command reuses the finished run.
#[test]
fn finetuning_beats_the_answer_prior() {
    let dir = crate::common::tempdir();
    let run = || {
        crate::common::run(finetune_vqa(
            dir.path(),
            &["--models", "joint", "--epochs", "4", "--jobs", "1"],
        ))
    };
    run();
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("out/results.json")).unwrap())
            .unwrap();
    let accuracy = |row: usize| {
        results["summary"][row]["accuracy"]["mean"]
            .as_f64()
            .unwrap()
    };
    assert_eq!(results["summary"][0]["model"], "answer prior");
    assert_eq!(results["summary"][1]["model"], "joint");
    let (prior, joint) = (accuracy(0), accuracy(1));
    assert!(
        joint > prior + 0.08,
        "joint {joint:.3}, answer prior {prior:.3}"
    );
    let run_dir = dir.path().join("out/runs/joint-seed0");
    let predictions: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(run_dir.join("predictions.json")).unwrap()).unwrap();
    assert_eq!(
        predictions.len() as u64,
        results["eval_questions"].as_u64().unwrap()
    );
    assert!(predictions[0]["question_id"].is_u64() && predictions[0]["answer"].is_string());
    assert!(run_dir.join("report.html").is_file() && run_dir.join("metrics.jsonl").is_file());
    let finished = std::fs::metadata(run_dir.join("result.json"))
        .unwrap()
        .modified()
        .unwrap();
    run();
    let again = std::fs::metadata(run_dir.join("result.json"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(finished, again);
}

#[test]
fn finetune_vqa_refuses_bad_options_before_writing() {
    let dir = crate::common::tempdir();
    let error = crate::common::fails(finetune_vqa(dir.path(), &["--questions", "nowhere"]));
    assert!(
        error.contains("--questions") && error.contains("--coco-root"),
        "{error}"
    );
    let error = crate::common::fails(finetune_vqa(dir.path(), &["--seeds", "1,1"]));
    assert!(error.contains("names a seed twice"), "{error}");
    assert!(!dir.path().join("out").exists());
}
