//! `berth tls`: the private CA and the certificates of every role, like `nomad tls` /
//! `consul tls`. The files feed `--tls-cert-file`, `--tls-key-file` and `--tls-ca-file`.

use std::path::PathBuf;

use berth_identity::Role;

#[derive(Debug, clap::Subcommand)]
pub enum TlsCommand {
    /// The private certificate authority.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Leaf certificates signed by the CA.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum CaCommand {
    /// Write a new CA: DIR/ca.pem and DIR/ca-key.pem (0600). Never overwrites.
    Create {
        /// Folder to write into (made if missing).
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CertCommand {
    /// Sign a certificate for one role and name with DIR's CA: DIR/ROLE-NAME.pem and
    /// DIR/ROLE-NAME-key.pem (0600). It carries the SANs ROLE.NAME.berth (its identity),
    /// ROLE.berth, localhost, 127.0.0.1 and ::1, for TLS server and client use.
    Create {
        /// What the certificate may act as: server, agent, diag or registry.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// The name: for an agent, its node id (it may claim only that one).
        #[arg(long)]
        name: String,
        /// Folder holding ca.pem and ca-key.pem; the certificate is written there.
        #[arg(long, value_name = "DIR", default_value = ".")]
        dir: PathBuf,
        /// An extra DNS name or IP address to carry (repeatable), for other clients that
        /// verify by the host they dial.
        #[arg(long = "san", value_name = "NAME")]
        sans: Vec<String>,
    },
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
        .map_err(|e: berth_identity::IdentityError| e.to_string())
}

pub fn run(command: TlsCommand) -> anyhow::Result<()> {
    match command {
        TlsCommand::Ca(CaCommand::Create { dir }) => {
            let files = berth_identity::create_ca(&dir)?;
            println!("wrote {} and {}", files.cert.display(), files.key.display());
            println!(
                "keep {} private: whoever holds it can mint certificates for any role",
                files.key.display()
            );
        }
        TlsCommand::Cert(CertCommand::Create {
            role,
            name,
            dir,
            sans,
        }) => {
            let files = berth_identity::create_cert(&dir, role, &name, &sans)?;
            println!(
                "wrote {} and {} ({role} {name})",
                files.cert.display(),
                files.key.display()
            );
        }
    }
    Ok(())
}
