//! `berth completions SHELL`: shell completion scripts generated from the CLI definition.

use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The shell to generate completions for.
    shell: clap_complete::Shell,
}

pub fn run<C: CommandFactory>(args: Args) -> anyhow::Result<()> {
    let mut command = C::command();
    clap_complete::generate(args.shell, &mut command, "berth", &mut std::io::stdout());
    Ok(())
}
