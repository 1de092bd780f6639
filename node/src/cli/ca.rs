//! `keel ca`: the cluster's certificate authority for internal mutual TLS and the API.

use std::path::PathBuf;

use anyhow::Context;

use crate::tls::ca::{CaDir, Subject, DEFAULT_VALID_DAYS};
use crate::tls::identity::Identity;

/// `keel ca` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum CaCmd {
    /// Make a new CA for a cluster in a directory (keep ca.key secret and off the servers).
    Init {
        /// CA directory.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The cluster name the servers run with (--cluster-name).
        #[arg(long)]
        cluster: String,
    },
    /// Issue a certificate into a directory (ca.pem, cert.pem, key.pem): for a control
    /// node (--node ID), a host manager (--host NAME) or the public API (--api NAME…).
    Issue {
        /// CA directory.
        #[arg(long)]
        ca_dir: PathBuf,
        /// A control node's id.
        #[arg(long, group = "subject")]
        node: Option<u64>,
        /// A host manager's name.
        #[arg(long, group = "subject")]
        host: Option<String>,
        /// The public API, valid for these DNS names or IP addresses (comma-separated).
        #[arg(long, group = "subject", value_delimiter = ',')]
        api: Vec<String>,
        /// Where to write the files (the process's --tls-dir / --api-tls-dir).
        #[arg(long)]
        out: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = DEFAULT_VALID_DAYS)]
        days: u32,
    },
    /// Rotate the CA key: `start` trusts a new key beside the old one (spread ca.pem,
    /// then re-issue every certificate), `finish` trusts only the new one (spread again).
    Rotate {
        /// CA directory.
        #[arg(long)]
        ca_dir: PathBuf,
        /// Which step.
        #[arg(value_enum)]
        step: RotateStep,
    },
    /// Copy the CA directory's current trust bundle into an issued directory's ca.pem.
    Spread {
        /// CA directory.
        #[arg(long)]
        ca_dir: PathBuf,
        /// The issued directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// A step of a CA rotation.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RotateStep {
    /// Make a new signing key; trust old and new.
    Start,
    /// Trust only the new key.
    Finish,
}

/// Run a `keel ca` command.
pub fn run(cmd: CaCmd) -> anyhow::Result<()> {
    match cmd {
        CaCmd::Init { ca_dir, cluster } => {
            CaDir::at(&ca_dir).init(&cluster)?;
            println!("Made a CA for cluster {cluster} in {}.", ca_dir.display());
        }
        CaCmd::Issue {
            ca_dir,
            node,
            host,
            api,
            out,
            days,
        } => {
            let ca = CaDir::at(&ca_dir);
            let cluster = ca
                .cluster()
                .with_context(|| format!("{} holds no CA; make one with `keel ca init`", ca_dir.display()))?;
            let subject = match (node, host) {
                (Some(id), _) => Subject::Member(Identity::node(&cluster, id)),
                (_, Some(name)) => Subject::Member(Identity::host(&cluster, &name)),
                _ if !api.is_empty() => Subject::Api(api),
                _ => anyhow::bail!("say what the certificate is for: --node ID, --host NAME or --api NAME[,NAME…]"),
            };
            ca.issue(&subject, days, &out)?;
            println!("Issued a certificate into {} (valid {days} days).", out.display());
        }
        CaCmd::Rotate { ca_dir, step } => {
            let ca = CaDir::at(&ca_dir);
            match step {
                RotateStep::Start => {
                    ca.rotate()?;
                    println!("New CA key made; trusted with the old one. Next: `keel ca spread` to every process, then re-issue every certificate, then `keel ca rotate finish`.");
                }
                RotateStep::Finish => {
                    ca.finish_rotation()?;
                    println!("Only the new CA key is trusted. Next: `keel ca spread` to every process.");
                }
            }
        }
        CaCmd::Spread { ca_dir, out } => CaDir::at(&ca_dir).spread_bundle(&out)?,
    }
    Ok(())
}
