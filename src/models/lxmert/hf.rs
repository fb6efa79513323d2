//! Loading Hugging Face `LxmertModel` and `LxmertForPreTraining` safetensors checkpoints
//! (e.g. `unc-nlp/lxmert-base-uncased`). Every tensor is matched by name and shape; an error
//! lists each missing, misshapen or unexpected name (see [`HfWeights`]).

use std::path::Path;

use crate::nn::Backend;

use super::model::{CrossModalityLayer, Lxmert, LxmertConfig};
use super::pretraining::{LxmertPretraining, LxmertPretrainingConfig};
use crate::nn::{HfWeights, HfWeightsError, TransformerEncoder};

/// The prefix of the encoder in `LxmertForPreTraining` checkpoints.
const PRETRAINING_PREFIX: &str = "lxmert.";
/// Heads of `LxmertForPreTraining` that an encoder-only load leaves out.
const HEAD_PREFIXES: [&str; 3] = ["cls.", "obj_predict_head.", "answer_head."];

/// A loaded model and the file's tensors it deliberately left out (heads it has no use for).
pub struct HfLoad<M> {
    pub model: M,
    pub skipped: Vec<String>,
}

/// Loads the encoder of either checkpoint kind into a model built from `config` (which must
/// read region features: Hugging Face's LXMERT has no patch encoder). Heads in a pretraining
/// checkpoint are skipped and named in [`HfLoad::skipped`].
pub fn load_lxmert<B: Backend>(
    config: &LxmertConfig,
    path: &Path,
    device: &B::Device,
) -> Result<HfLoad<Lxmert<B>>, HfWeightsError> {
    let mut weights = HfWeights::open(path)?;
    let prefixed = weights.names().any(|n| n.starts_with(PRETRAINING_PREFIX));
    if prefixed {
        weights.set_prefix(PRETRAINING_PREFIX);
    }
    let model = read_lxmert(&mut weights, config.init(device));
    let skipped = weights.finish(if prefixed { &HEAD_PREFIXES } else { &[] })?;
    Ok(HfLoad { model, skipped })
}

/// Loads an `LxmertForPreTraining` checkpoint with its masked-LM, object and matching heads.
/// The visual-QA head (`answer_head.*`), which vislang does not train, is skipped.
pub fn load_lxmert_pretraining<B: Backend>(
    config: &LxmertPretrainingConfig,
    path: &Path,
    device: &B::Device,
) -> Result<HfLoad<LxmertPretraining<B>>, HfWeightsError> {
    let mut weights = HfWeights::open(path)?;
    let mut model = config.init::<B>(device);
    weights.set_prefix(PRETRAINING_PREFIX);
    model.lxmert = read_lxmert(&mut weights, model.lxmert);
    weights.set_prefix("");

    let head = &mut model.language_head;
    head.transform = weights.linear("cls.predictions.transform.dense", head.transform.clone());
    head.norm = weights.layer_norm("cls.predictions.transform.LayerNorm", head.norm.clone());
    let vocab = head.bias.val().dims();
    if let Some(bias) = weights.tensor::<B, 1>("cls.predictions.bias", vocab, device) {
        head.bias = burn::module::Param::from_tensor(bias);
    }
    // The decoder is tied to the word embeddings; a file may store the copy or leave it out.
    if weights.contains("cls.predictions.decoder.weight") {
        let words = model.lxmert.text_embeddings.token.weight.val();
        if let Some(decoder) =
            weights.tensor::<B, 2>("cls.predictions.decoder.weight", words.dims(), device)
        {
            if !decoder.all_close(words, Some(1e-6), Some(1e-6)) {
                return Err(HfWeightsError::Mismatch {
                    path: path.to_path_buf(),
                    details: "\n  cls.predictions.decoder.weight: differs from lxmert.embeddings.word_embeddings.weight; vislang ties them as Hugging Face does".into(),
                });
            }
        }
    }
    model.matching_head = weights.linear("cls.seq_relationship", model.matching_head);

    let head = &mut model.object_head;
    head.transform = weights.linear("obj_predict_head.transform.dense", head.transform.clone());
    head.norm = weights.layer_norm("obj_predict_head.transform.LayerNorm", head.norm.clone());
    head.feature = weights.linear("obj_predict_head.decoder_dict.feat", head.feature.clone());
    head.objects = head
        .objects
        .take()
        .map(|l| weights.linear("obj_predict_head.decoder_dict.obj", l));
    head.attributes = head
        .attributes
        .take()
        .map(|l| weights.linear("obj_predict_head.decoder_dict.attr", l));
    let skipped = weights.finish(&["answer_head."])?;
    Ok(HfLoad { model, skipped })
}

/// Reads every encoder tensor under the current prefix into `model`.
fn read_lxmert<B: Backend>(weights: &mut HfWeights, mut model: Lxmert<B>) -> Lxmert<B> {
    let e = &mut model.text_embeddings;
    e.token = weights.embedding("embeddings.word_embeddings", e.token.clone());
    e.position = weights.embedding("embeddings.position_embeddings", e.position.clone());
    e.segment = weights.embedding("embeddings.token_type_embeddings", e.segment.clone());
    e.norm = weights.layer_norm("embeddings.LayerNorm", e.norm.clone());

    let v = &mut model.visual_embeddings;
    v.feature = weights.linear("encoder.visn_fc.visn_fc", v.feature.clone());
    v.feature_norm = weights.layer_norm("encoder.visn_fc.visn_layer_norm", v.feature_norm.clone());
    v.box_position = weights.linear("encoder.visn_fc.box_fc", v.box_position.clone());
    v.box_norm = weights.layer_norm("encoder.visn_fc.box_layer_norm", v.box_norm.clone());

    model.language_encoder = read_encoder(weights, "encoder.layer", model.language_encoder);
    model.object_encoder = read_encoder(weights, "encoder.r_layers", model.object_encoder);
    model.cross_layers = model
        .cross_layers
        .into_iter()
        .enumerate()
        .map(|(i, layer)| read_cross_layer(weights, &format!("encoder.x_layers.{i}"), layer))
        .collect();
    model.pooler = weights.linear("pooler.dense", model.pooler);
    model
}

fn read_encoder<B: Backend>(
    weights: &mut HfWeights,
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
                weights.bert_layer(
                    &format!("{p}.attention"),
                    &format!("{p}.intermediate"),
                    &format!("{p}.output"),
                    layer,
                )
            })
            .collect(),
    }
}

fn read_cross_layer<B: Backend>(
    weights: &mut HfWeights,
    p: &str,
    mut layer: CrossModalityLayer<B>,
) -> CrossModalityLayer<B> {
    let cross = &mut layer.cross_attention;
    cross.attention = weights.attention(
        &format!("{p}.visual_attention.att"),
        &format!("{p}.visual_attention.output"),
        cross.attention.clone(),
    );
    cross.norm = weights.layer_norm(
        &format!("{p}.visual_attention.output.LayerNorm"),
        cross.norm.clone(),
    );
    layer.language = weights.bert_layer(
        &format!("{p}.lang_self_att"),
        &format!("{p}.lang_inter"),
        &format!("{p}.lang_output"),
        layer.language,
    );
    layer.vision = weights.bert_layer(
        &format!("{p}.visn_self_att"),
        &format!("{p}.visn_inter"),
        &format!("{p}.visn_output"),
        layer.vision,
    );
    layer
}
