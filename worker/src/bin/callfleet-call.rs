//! `callfleet-call`: a smoke-test call to a callfleet worker. See `callfleet_call` for the
//! parts; this file wires flags, output files and the exit code.

mod callfleet_call;

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;

use callfleet_call::args::Args;
use callfleet_call::audio_file::reply_wav;
use callfleet_call::error::CallError;
use callfleet_call::session::{CallReport, place_call};
use callfleet_call::timeline::TurnLatency;

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}

async fn run(args: &Args) -> Result<(), CallError> {
    let mut transcript = open_transcript(&args.transcript)?;
    let mut write_error = None;
    let on_text = |text: &str| {
        if let Err(error) =
            writeln!(transcript, "assistant: {text}").and_then(|()| transcript.flush())
        {
            write_error.get_or_insert(error);
        }
    };
    let on_turn = |index: usize, turn: &TurnLatency| {
        eprintln!(
            "turn {index}: caller audio ended at {:.2} s; first reply audio after {} ms",
            turn.speech_end.as_secs_f64(),
            turn.latency.as_millis()
        );
    };
    let report = place_call(args, on_text, on_turn).await?;
    if let Some(error) = write_error {
        return Err(CallError::Output {
            path: args.transcript.clone(),
            reason: error.to_string(),
        });
    }
    write_reply(args, &report)?;
    summarize(args, &report);
    verdict(&report)
}

fn open_transcript(path: &str) -> Result<Box<dyn Write>, CallError> {
    if path == "-" {
        return Ok(Box::new(std::io::stdout()));
    }
    std::fs::File::create(path)
        .map(|file| Box::new(file) as Box<dyn Write>)
        .map_err(|e| CallError::Output {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn write_reply(args: &Args, report: &CallReport) -> Result<(), CallError> {
    if report.reply.is_empty() {
        return Ok(());
    }
    std::fs::write(&args.out, reply_wav(&report.reply, report.reply_rate)).map_err(|e| {
        CallError::Output {
            path: args.out.display().to_string(),
            reason: e.to_string(),
        }
    })
}

fn summarize(args: &Args, report: &CallReport) {
    eprintln!(
        "call {} to {}: connected in {} ms, sent {:.2} s of caller audio",
        report.call_id,
        report.url,
        report.connect_time.as_millis(),
        report.caller_audio.as_secs_f64()
    );
    if let Some(greeting) = report.greeting {
        eprintln!(
            "greeting: first audio {} ms after the call started",
            greeting.as_millis()
        );
    }
    if !report.reply.is_empty() {
        eprintln!(
            "reply: {:.2} s of audio at {} Hz written to {}; {} marks acknowledged, {} playback clears",
            report.reply.len() as f64 / f64::from(report.reply_rate.max(1)),
            report.reply_rate,
            args.out.display(),
            report.marks_acknowledged,
            report.clears
        );
    }
    if !args.protocol.carries_text() {
        eprintln!("transcript: Twilio Media Streams carry no text");
    } else if report.transcript.is_empty() {
        eprintln!("transcript: no text arrived");
    }
    if let Some(reason) = &report.ended_by_worker {
        eprintln!("the worker ended the call: {reason}");
    }
}

/// Success only when the call worked end to end: reply audio arrived and no errors.
fn verdict(report: &CallReport) -> Result<(), CallError> {
    if let Some((code, message)) = report.errors.first() {
        return Err(CallError::Failed(format!(
            "{} error(s) from the worker, first: {code}: {message}",
            report.errors.len()
        )));
    }
    if report.reply.is_empty() || report.unanswered {
        return Err(CallError::NoReply);
    }
    Ok(())
}
