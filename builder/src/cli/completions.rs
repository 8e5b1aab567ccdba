//! `piimg completions SHELL`: the shell's completion script, generated from the
//! same clap definition as the parser so it cannot drift from it.

use clap::Args;
use clap_complete::Shell;

/// Arguments of `piimg completions`.
#[derive(Debug, Args)]
#[command(after_help = "\
Load it for the current shell, or install it where the shell looks:
  bash:       source <(piimg completions bash)
              piimg completions bash > ~/.local/share/bash-completion/completions/piimg
  zsh:        piimg completions zsh > ~/.zfunc/_piimg   (with fpath+=~/.zfunc before compinit)
  fish:       piimg completions fish > ~/.config/fish/completions/piimg.fish
  elvish:     piimg completions elvish >> ~/.config/elvish/rc.elv
  powershell: piimg completions powershell | Out-String | Invoke-Expression")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Writes the completion script to stdout.
pub fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = super::command();
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "piimg", &mut buf);
    super::pipe::write_stdout(&buf)
}
