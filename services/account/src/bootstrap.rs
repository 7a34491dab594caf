//! The first credentials: an operator token for the distributed mode's first run, and for the
//! embedded all-in-one a demo account with one API key, written to files in the data directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use platform::clock::SharedClock;

use crate::api;
use crate::domain::{self, NewOperator, OPERATOR_TOKEN_PREFIX};
use crate::store::{AccountStore, Added};

/// The file the embedded mode writes the demo account's API key to.
pub const DEMO_KEY_FILE: &str = "demo-api-key";
/// The file the embedded mode writes its operator token to.
pub const OPERATOR_TOKEN_FILE: &str = "operator-token";
/// The demo account's name.
pub const DEMO_ACCOUNT_NAME: &str = "Demo account";

/// Printed on stderr next to a new operator token.
pub const OPERATOR_TOKEN_NOTE: &str = "Operator token for the admin API (Authorization: Bearer <token>). It is shown \
                                       once and only its hash is stored; keep it secret.";

/// `bootstrap-operator`'s options.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct BootstrapArgs {
    /// Issue a token even though one was created before, revoking every earlier operator token
    /// (for a lost or leaked token).
    #[arg(long)]
    pub force: bool,
}

/// Creates an operator token and returns its text (the only time it exists in the clear).
pub async fn operator(store: &dyn AccountStore, clock: SharedClock, args: &BootstrapArgs) -> anyhow::Result<String> {
    let issued = domain::issue(OPERATOR_TOKEN_PREFIX);
    let operator = NewOperator { id: issued.id.clone(), secret_sha256: issued.secret_sha256, created_at: clock.now() };
    if args.force {
        store.replace_operators(&operator).await.context("storing the operator token")?;
    } else if !store.create_first_operator(&operator).await.context("storing the operator token")? {
        anyhow::bail!(
            "an operator token was created before; use it, or run with --force to revoke every operator token and \
             issue a new one"
        );
    }
    Ok(issued.token)
}

/// What the embedded mode's start found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstRun {
    /// This start made the demo account; `api_key` is the one chance to show it.
    Seeded { api_key: String, key_file: PathBuf, operator_file: PathBuf },
    /// An earlier start did; the files (if nobody removed them) hold the credentials.
    Existing { key_file: PathBuf, operator_file: PathBuf },
}

impl FirstRun {
    /// The lines to print for a person at the terminal.
    pub fn announcement(&self) -> String {
        match self {
            Self::Seeded { api_key, key_file, operator_file } => format!(
                "Created the demo account. Its API key (shown this once; saved in {key}):\n  {api_key}\n\
                 Send it as: Authorization: Bearer <key>. The operator token for the admin API is in {op}.",
                key = key_file.display(),
                op = operator_file.display(),
            ),
            Self::Existing { key_file, operator_file } => {
                format!("Demo API key: {} (operator token: {})", key_file.display(), operator_file.display())
            }
        }
    }
}

/// On the first start with an empty store: an operator token, and (when there is no account
/// yet) a demo account with one API key, each written to its file in `data_dir` (mode 0600).
/// Later starts create nothing.
///
/// Whether a start is the first is decided by the store (the first operator token is stored
/// once), so two processes on one store cannot both seed. Should the process die between storing
/// the token and writing the files, `fabrikam account bootstrap-operator --force` issues a new
/// token, and the admin API a new key.
pub async fn first_run(store: &dyn AccountStore, clock: SharedClock, data_dir: &Path) -> anyhow::Result<FirstRun> {
    let key_file = data_dir.join(DEMO_KEY_FILE);
    let operator_file = data_dir.join(OPERATOR_TOKEN_FILE);
    let issued = domain::issue(OPERATOR_TOKEN_PREFIX);
    let operator = NewOperator { id: issued.id.clone(), secret_sha256: issued.secret_sha256, created_at: clock.now() };
    if !store.create_first_operator(&operator).await.context("storing the first operator token")? {
        return Ok(FirstRun::Existing { key_file, operator_file });
    }
    write_secret(&operator_file, &issued.token)?;
    if !store.list_accounts().await?.is_empty() {
        // Accounts made by hand before the first embedded start: no demo account beside them.
        return Ok(FirstRun::Existing { key_file, operator_file });
    }
    let account = api::new_account(DEMO_ACCOUNT_NAME.to_owned(), clock.now());
    store.create_account(&account).await?;
    let (key, answer) = api::issue_key(&account.id, None, Some("demo".to_owned()), clock.now());
    match store.create_key(&key).await? {
        Added::Done => {}
        other => anyhow::bail!("the demo account's key was not stored: {other:?}"),
    }
    write_secret(&key_file, &answer.api_key)?;
    tracing::info!(account_id = %account.id, key_id = %answer.key_id, "demo account created");
    Ok(FirstRun::Seeded { api_key: answer.api_key, key_file, operator_file })
}

/// Writes `secret` to `path`, readable and writable by the owner only, replacing the file.
fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // `mode` applies only when the file is created; an existing file is narrowed too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(format!("{secret}\n").as_bytes())?;
    file.sync_all()?;
    Ok(())
}
