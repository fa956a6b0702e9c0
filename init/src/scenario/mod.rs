//! Scenarios: workloads written as files (`docs/scenarios.md`) instead of
//! fixed subcommands, run by `svm run FILE|DIR`.
//!
//! - `format.rs`, `value.rs`: what a file may say (serde types, numbers,
//!   addresses, conditions);
//! - `expand.rs`: parameters, `--long`, the matrix, `${...}` substitution;
//! - `runner.rs`, `cli.rs`: a process per scenario under time bounds, the
//!   output, the totals, `--list`, `--json`, the conformance table
//!   (`table.rs`);
//! - `run_here.rs`, `exec.rs` and the step modules: boot a system and run
//!   the steps against it, keeping a shadow of every word (`shadow.rs`)
//!   that every check compares with.

pub mod batch_steps;
pub mod cli;
pub mod cpu_steps;
pub mod exec;
pub mod expand;
pub mod fork;
pub mod format;
pub mod gpu_steps;
pub mod heap;
pub mod mem_steps;
pub mod memory;
pub mod report;
pub mod run_here;
pub mod runner;
pub mod shadow;
pub mod table;
pub mod value;
pub mod world;
