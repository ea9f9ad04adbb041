//! The `sessionstore-operator` binary: `run` the controller, print the `crd`, or `render` a manifest.

use std::io::Read;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sessionstore_operator::render;
use sessionstore_operator::settings::OperatorSettings;

#[derive(Parser, Debug)]
#[command(name = "sessionstore-operator", version, about = "A secure, reliable Redis for every application's sessions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print the SessionStore CustomResourceDefinition as YAML.
    Crd,
    /// Validate a SessionStore manifest and print every child object, with no cluster.
    Render {
        /// Manifest file, or `-` for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Print generated Secret values instead of `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => render::crd_yaml().map(|yaml| print!("{yaml}")),
        Command::Render { file, show_secrets } => read_input(&file).and_then(|source| {
            render::render(&source, &file, show_secrets, &OperatorSettings::default())
                .map(|yaml| print!("{yaml}"))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read_input(file: &str) -> sessionstore_operator::Result<String> {
    let mut source = String::new();
    let read = if file == "-" {
        std::io::stdin().read_to_string(&mut source).map(|_| ())
    } else {
        std::fs::read_to_string(file).map(|s| source = s)
    };
    read.map_err(|e| sessionstore_operator::Error::Input {
        path: file.into(),
        message: e.to_string(),
    })?;
    Ok(source)
}
