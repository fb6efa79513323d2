//! Hugging Face's `LxmertModel` and `LxmertForPreTraining` checkpoints (e.g.
//! `unc-nlp/lxmert-base-uncased`), both ways: loading safetensors or PyTorch files, and
//! exporting a vislang model under Hugging Face's names. One walk ([`walk_lxmert`],
//! [`walk_heads`]) holds the name mapping for both directions (see [`HfTensors`]). Loading
//! matches every tensor by name and shape; an error lists each missing, misshapen or
//! unexpected name (see [`HfWeights`]). [`super::hf_folder`] reads a model folder's
//! `config.json` and vocabulary.

use std::path::Path;

use crate::nn::{Backend, HfExport, HfTensors};

use super::model::{CrossModalityLayer, Lxmert};
use super::pretraining::{LxmertPretraining, MaskedObjectHead};
use super::question_answering::{walk_answer_head, LxmertQuestionAnswering};
use crate::io::checkpoint::{load_safetensors, CheckpointError};
use crate::nn::{HfWeights, HfWeightsError, TransformerEncoder};

/// vislang's own file beside an exported pixel model's Hugging Face weights: its patch
/// encoder, which Hugging Face's LXMERT has no place for (written by `export-lxmert`).
pub const PATCH_ENCODER_FILE: &str = "vislang-patch-encoder.safetensors";

/// The prefix of the encoder in `LxmertForPreTraining` checkpoints.
const PRETRAINING_PREFIX: &str = "lxmert.";
/// Heads of `LxmertForPreTraining` that an encoder-only load leaves out.
const HEAD_PREFIXES: [&str; 3] = ["cls.", "obj_predict_head.", "answer_head."];
/// A buffer (not a parameter) that some transformers versions save: the ids 0..512.
const POSITION_IDS: &str = "embeddings.position_ids";
const OBJECT_HEAD: &str = "obj_predict_head.";

/// A loaded model, the file's tensors it deliberately left out (heads it has no use for), and
/// the model's parts that the file could not supply and that start from initialisation.
pub struct HfLoad<M> {
    pub model: M,
    pub skipped: Vec<String>,
    pub fresh: Vec<String>,
}

impl<M> HfLoad<M> {
    /// One line for the log: where the weights came from, and what did not.
    pub fn summary(&self, path: &Path) -> String {
        let mut line = format!("started from {}", path.display());
        if !self.fresh.is_empty() {
            line += &format!("; initialised fresh: {}", self.fresh.join(", "));
        }
        if !self.skipped.is_empty() {
            let mut heads: Vec<&str> = self
                .skipped
                .iter()
                .map(|n| n.split('.').next().unwrap_or(n))
                .collect();
            heads.dedup();
            line += &format!(
                "; left out of the file: {} tensors ({})",
                self.skipped.len(),
                heads.join(", ")
            );
        }
        line
    }
}

/// Loads the encoder of either checkpoint kind into `model` (which reads region features, or
/// pixels through a patch encoder that keeps its initialisation: Hugging Face's LXMERT has
/// none). Heads in a pretraining checkpoint are skipped and named in
/// [`HfLoad::skipped`].
pub fn load_lxmert<B: Backend>(
    model: Lxmert<B>,
    path: &Path,
) -> Result<HfLoad<Lxmert<B>>, HfWeightsError> {
    let mut weights = HfWeights::open(path)?;
    let prefixed = weights.names().any(|n| n.starts_with(PRETRAINING_PREFIX));
    if prefixed {
        weights.set_prefix(PRETRAINING_PREFIX);
    }
    let (model, fresh) = load_patch_encoder(model, path)?;
    let model = walk_lxmert(&mut weights, model);
    weights.skip(POSITION_IDS);
    let skipped = weights.finish(if prefixed { &HEAD_PREFIXES } else { &[] })?;
    Ok(HfLoad {
        model,
        skipped,
        fresh,
    })
}

/// Loads an `LxmertForQuestionAnswering` checkpoint (encoder and `answer_head.*`) into
/// `model`. The head must fit: its answers are the checkpoint's (e.g. the 3,129 of
/// `unc-nlp/lxmert-vqa-uncased`), and a head of another size is an error naming its tensors.
pub fn load_lxmert_question_answering<B: Backend>(
    mut model: LxmertQuestionAnswering<B>,
    path: &Path,
) -> Result<HfLoad<LxmertQuestionAnswering<B>>, HfWeightsError> {
    let mut weights = HfWeights::open(path)?;
    let fresh;
    (model.lxmert, fresh) = load_patch_encoder(model.lxmert, path)?;
    weights.set_prefix(PRETRAINING_PREFIX);
    model.lxmert = walk_lxmert(&mut weights, model.lxmert);
    weights.skip(POSITION_IDS);
    weights.set_prefix("");
    model.answer_head = walk_answer_head(&mut weights, "answer_head.", model.answer_head);
    let skipped = weights.finish(&[])?;
    Ok(HfLoad {
        model,
        skipped,
        fresh,
    })
}

/// Loads an `LxmertForPreTraining` checkpoint into `model` with its masked-LM, object and
/// matching heads.
/// The visual-QA head (`answer_head.*`), which vislang does not train, is skipped. Heads the
/// file cannot supply start fresh and are named in [`HfLoad::fresh`]: all of them for an
/// `LxmertModel` file, and the masked-object head when its targets differ from the file's
/// (pixels' patch colours, or other detector labels).
pub fn load_lxmert_pretraining<B: Backend>(
    mut model: LxmertPretraining<B>,
    path: &Path,
) -> Result<HfLoad<LxmertPretraining<B>>, HfWeightsError> {
    let mut weights = HfWeights::open(path)?;
    let mut fresh;
    (model.lxmert, fresh) = load_patch_encoder(model.lxmert, path)?;
    if !weights.names().any(|n| n.starts_with(PRETRAINING_PREFIX)) {
        // An `LxmertModel` file: the encoder only.
        model.lxmert = walk_lxmert(&mut weights, model.lxmert);
        weights.skip(POSITION_IDS);
        let skipped = weights.finish(&[])?;
        fresh.extend(["language_head", "object_head", "matching_head"].map(String::from));
        fresh.extend(contrastive_fresh(&model));
        return Ok(HfLoad {
            model,
            skipped,
            fresh,
        });
    }
    weights.set_prefix(PRETRAINING_PREFIX);
    model.lxmert = walk_lxmert(&mut weights, model.lxmert);
    weights.skip(POSITION_IDS);
    weights.set_prefix("");
    check_tied_decoder(&mut weights, &model, path)?;

    let object_head_fits = object_head_shapes(&model.object_head)
        .iter()
        .all(|(name, shape)| weights.shape(name).as_ref() == Some(shape))
        && weights
            .names()
            .filter(|n| n.starts_with(OBJECT_HEAD))
            .count()
            == object_head_shapes(&model.object_head).len();
    let mut skipped = Vec::new();
    if !object_head_fits {
        skipped = weights.skip(OBJECT_HEAD);
        fresh.push("object_head".into());
    }
    model = walk_heads(&mut weights, model, object_head_fits);
    fresh.extend(contrastive_fresh(&model));
    skipped.extend(weights.finish(&["answer_head."])?);
    Ok(HfLoad {
        model,
        skipped,
        fresh,
    })
}

/// `["contrastive_head"]` when the model has one: Hugging Face's LXMERT has no contrastive
/// projections (vislang's addition).
fn contrastive_fresh<B: Backend>(model: &LxmertPretraining<B>) -> Option<String> {
    model
        .contrastive_head
        .as_ref()
        .map(|_| "contrastive_head".to_string())
}

/// The patch encoder of a model that reads pixels, from [`PATCH_ENCODER_FILE`] beside the
/// weights file `path` when a vislang export put it there; otherwise it keeps its
/// initialisation and is named in the returned list of fresh parts.
fn load_patch_encoder<B: Backend>(
    mut model: Lxmert<B>,
    path: &Path,
) -> Result<(Lxmert<B>, Vec<String>), HfWeightsError> {
    let Some(encoder) = model.patch_encoder.take() else {
        return Ok((model, Vec::new()));
    };
    let file = path.with_file_name(PATCH_ENCODER_FILE);
    if !file.is_file() {
        model.patch_encoder = Some(encoder);
        return Ok((model, vec!["patch_encoder".to_string()]));
    }
    let encoder = load_safetensors(encoder, &file).map_err(|e| match e {
        CheckpointError::Mismatch { path, details } => HfWeightsError::Mismatch { path, details },
        other => HfWeightsError::Format {
            path: file.clone(),
            message: other.to_string(),
        },
    })?;
    model.patch_encoder = Some(encoder);
    Ok((model, Vec::new()))
}

/// The decoder is tied to the word embeddings; a file may store the copy or leave it out, but
/// a copy that differs is not a model vislang can represent.
fn check_tied_decoder<B: Backend>(
    weights: &mut HfWeights,
    model: &LxmertPretraining<B>,
    path: &Path,
) -> Result<(), HfWeightsError> {
    const DECODER: &str = "cls.predictions.decoder.weight";
    if !weights.contains(DECODER) {
        return Ok(());
    }
    let words = model.lxmert.text_embeddings.token.weight.val();
    if let Some(decoder) = weights.tensor::<B, 2>(DECODER, words.dims(), &words.device()) {
        if !decoder.all_close(words, Some(1e-6), Some(1e-6)) {
            return Err(HfWeightsError::Mismatch {
                path: path.to_path_buf(),
                details: format!("\n  {DECODER}: differs from lxmert.embeddings.word_embeddings.weight; vislang ties them as Hugging Face does"),
            });
        }
    }
    Ok(())
}

/// The file names and PyTorch shapes of the masked-object head's tensors.
fn object_head_shapes<B: Backend>(head: &MaskedObjectHead<B>) -> Vec<(String, Vec<usize>)> {
    let mut shapes = Vec::new();
    let mut linear = |name: &str, l: &burn::nn::Linear<B>| {
        let [d_in, d_out] = l.weight.val().dims();
        shapes.push((format!("{OBJECT_HEAD}{name}.weight"), vec![d_out, d_in]));
        shapes.push((format!("{OBJECT_HEAD}{name}.bias"), vec![d_out]));
    };
    linear("transform.dense", &head.transform);
    linear("decoder_dict.feat", &head.feature);
    if let Some(objects) = &head.objects {
        linear("decoder_dict.obj", objects);
    }
    if let Some(attributes) = &head.attributes {
        linear("decoder_dict.attr", attributes);
    }
    let width = head.norm.gamma.val().dims();
    shapes.push((
        format!("{OBJECT_HEAD}transform.LayerNorm.weight"),
        width.to_vec(),
    ));
    shapes.push((
        format!("{OBJECT_HEAD}transform.LayerNorm.bias"),
        width.to_vec(),
    ));
    shapes
}

/// The encoder's tensors under the current prefix.
pub fn walk_lxmert<B: Backend, T: HfTensors>(tensors: &mut T, mut model: Lxmert<B>) -> Lxmert<B> {
    let e = &mut model.text_embeddings;
    e.token = tensors.embedding("embeddings.word_embeddings", e.token.clone());
    e.position = tensors.embedding("embeddings.position_embeddings", e.position.clone());
    e.segment = tensors.embedding("embeddings.token_type_embeddings", e.segment.clone());
    e.norm = tensors.layer_norm("embeddings.LayerNorm", e.norm.clone());

    let v = &mut model.visual_embeddings;
    v.feature = tensors.linear("encoder.visn_fc.visn_fc", v.feature.clone());
    v.feature_norm = tensors.layer_norm("encoder.visn_fc.visn_layer_norm", v.feature_norm.clone());
    v.box_position = tensors.linear("encoder.visn_fc.box_fc", v.box_position.clone());
    v.box_norm = tensors.layer_norm("encoder.visn_fc.box_layer_norm", v.box_norm.clone());

    model.language_encoder = walk_encoder(tensors, "encoder.layer", model.language_encoder);
    model.object_encoder = walk_encoder(tensors, "encoder.r_layers", model.object_encoder);
    model.cross_layers = model
        .cross_layers
        .into_iter()
        .enumerate()
        .map(|(i, layer)| walk_cross_layer(tensors, &format!("encoder.x_layers.{i}"), layer))
        .collect();
    model.pooler = tensors.linear("pooler.dense", model.pooler);
    model
}

/// The pretraining heads (no prefix); the object head only when `object_head` is set.
pub fn walk_heads<B: Backend, T: HfTensors>(
    tensors: &mut T,
    mut model: LxmertPretraining<B>,
    object_head: bool,
) -> LxmertPretraining<B> {
    let head = &mut model.language_head;
    head.transform = tensors.linear("cls.predictions.transform.dense", head.transform.clone());
    head.norm = tensors.layer_norm("cls.predictions.transform.LayerNorm", head.norm.clone());
    head.bias = tensors.param("cls.predictions.bias", head.bias.clone());
    model.matching_head = tensors.linear("cls.seq_relationship", model.matching_head);
    if object_head {
        let head = &mut model.object_head;
        head.transform = tensors.linear("obj_predict_head.transform.dense", head.transform.clone());
        head.norm = tensors.layer_norm("obj_predict_head.transform.LayerNorm", head.norm.clone());
        head.feature = tensors.linear("obj_predict_head.decoder_dict.feat", head.feature.clone());
        head.objects = head
            .objects
            .take()
            .map(|l| tensors.linear("obj_predict_head.decoder_dict.obj", l));
        head.attributes = head
            .attributes
            .take()
            .map(|l| tensors.linear("obj_predict_head.decoder_dict.attr", l));
    }
    model
}

fn walk_encoder<B: Backend, T: HfTensors>(
    tensors: &mut T,
    prefix: &str,
    encoder: TransformerEncoder<B>,
) -> TransformerEncoder<B> {
    TransformerEncoder {
        layers: encoder
            .layers
            .into_iter()
            .enumerate()
            .map(|(i, layer)| {
                let p = format!("{prefix}.{i}");
                tensors.bert_layer(
                    &format!("{p}.attention"),
                    &format!("{p}.intermediate"),
                    &format!("{p}.output"),
                    layer,
                )
            })
            .collect(),
    }
}

fn walk_cross_layer<B: Backend, T: HfTensors>(
    tensors: &mut T,
    p: &str,
    mut layer: CrossModalityLayer<B>,
) -> CrossModalityLayer<B> {
    let cross = &mut layer.cross_attention;
    cross.attention = tensors.attention(
        &format!("{p}.visual_attention.att"),
        &format!("{p}.visual_attention.output"),
        cross.attention.clone(),
    );
    cross.norm = tensors.layer_norm(
        &format!("{p}.visual_attention.output.LayerNorm"),
        cross.norm.clone(),
    );
    layer.language = tensors.bert_layer(
        &format!("{p}.lang_self_att"),
        &format!("{p}.lang_inter"),
        &format!("{p}.lang_output"),
        layer.language,
    );
    layer.vision = tensors.bert_layer(
        &format!("{p}.visn_self_att"),
        &format!("{p}.visn_inter"),
        &format!("{p}.visn_output"),
        layer.vision,
    );
    layer
}

/// A pretraining model's tensors under `LxmertForPreTraining`'s names (the tied decoder is
/// left out, as `save_pretrained` leaves it out of safetensors files). The patch encoder of a
/// pixel-reading model has no Hugging Face name and is not among them.
/// With `object_head` unset the masked-object head is left out too.
pub fn export_pretraining<B: Backend>(model: &LxmertPretraining<B>, object_head: bool) -> HfExport {
    let mut export = HfExport::new();
    export.set_prefix(PRETRAINING_PREFIX);
    walk_lxmert(&mut export, model.lxmert.clone());
    export.set_prefix("");
    walk_heads(&mut export, model.clone(), object_head);
    export
}

/// An encoder's tensors under `LxmertModel`'s names.
pub fn export_lxmert<B: Backend>(model: &Lxmert<B>) -> HfExport {
    let mut export = HfExport::new();
    walk_lxmert(&mut export, model.clone());
    export
}
