//! Converts published caption translations into COCO's caption schema, for
//! `--captions-train` / `--captions-val`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vislang::data::caption_conversion::convert_aihub_korean;

/// Converts a caption translation of MSCOCO 2014 into `captions_train2014.json` and
/// `captions_val2014.json` in COCO's schema, which every binary that reads captions takes with
/// `--captions-train` and `--captions-val` (see datasets/README.md).
///
/// `--from aihub-korean` (the default) reads AI Hub's Korean MSCOCO captions (`MSCOCO_train_val_Korean.json`: a
/// list of `{file_path, id, captions, caption_ko}` over both splits) and takes each image's
/// entry from the official caption files under --coco-root.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// The layout of --input.
    #[arg(long, value_enum, default_value_t = Layout::AihubKorean)]
    from: Layout,
    /// The translated captions file.
    #[arg(long)]
    input: PathBuf,
    /// MSCOCO 2014 root, for the official caption files' image entries.
    #[arg(long)]
    coco_root: PathBuf,
    /// Where the two caption files are written (existing files are never overwritten).
    #[arg(long, default_value = "data/captions-ko")]
    out: PathBuf,
    /// Leave out and list bad entries instead of stopping at the first.
    #[arg(long)]
    skip_bad: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Layout {
    /// AI Hub's Korean MSCOCO captions (`MSCOCO_train_val_Korean.json`).
    AihubKorean,
}

fn main() -> ExitCode {
    let Args {
        from,
        input,
        coco_root,
        out,
        skip_bad,
    } = Args::parse();
    let converted = match from {
        Layout::AihubKorean => convert_aihub_korean(&input, &coco_root, &out, skip_bad),
    };
    match converted {
        Ok(conversion) => {
            for (split, file, images, captions) in &conversion.written {
                println!(
                    "{}: {images} images, {captions} captions -> {}",
                    split.name(),
                    file.display()
                );
            }
            for reason in &conversion.skipped {
                println!("skipped {reason}");
            }
            let train = &conversion.written[0].1;
            let val = &conversion.written[1].1;
            println!(
                "use with: --coco-root {} --caption-language ko --captions-train {} --captions-val {}",
                coco_root.display(),
                train.display(),
                val.display()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
