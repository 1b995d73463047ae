//! How the human output looks, for `tail` and `replay` alike.

use crate::stream::output::{ColorChoice, Printer};

#[derive(clap::Args, Clone, Debug, Default)]
pub struct HumanArgs {
    /// Colour the human output (auto: on a terminal, unless NO_COLOR is set).
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,

    /// Print every `cgroup.subtree_control` write that changed nothing, instead of
    /// folding a process's run of them into one line with a count (systemd writes
    /// hundreds per daemon-reload; the writes that removed or enabled a controller always
    /// print on their own).
    #[arg(long)]
    pub unfold: bool,
}

impl HumanArgs {
    /// The printer, with `--unfold` applied.
    pub fn apply<W: std::io::Write>(&self, printer: Printer<W>) -> Printer<W> {
        if self.unfold {
            printer.unfold()
        } else {
            printer
        }
    }
}
