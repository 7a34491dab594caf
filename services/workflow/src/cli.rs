//! `fabrikam deadletters …`: the operator API of [`crate::admin`] from a terminal.

use anyhow::Context;
use reqwest::Method;
use serde_json::Value;

/// Operate the dead letters of the delivery-requests queue through a workflow's internal port.
#[derive(Debug, Clone, clap::Args)]
pub struct DeadLettersArgs {
    /// The workflow's internal address (the all-in-one's `--workflow-listen`).
    #[arg(long, env = "FABRIKAM_WORKFLOW_ADMIN_URL", default_value = "http://127.0.0.1:8085", global = true)]
    pub url: String,

    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// Lists dead letters, oldest first: message id, attempts, last error.
    List {
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the full JSON instead of one line each.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter with its message.
    Show { message_id: String },
    /// Puts dead letters back on the queue (same message id: replaying twice queues once).
    Replay {
        /// The message to replay.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        message_id: Option<String>,
        /// Replay every dead letter (up to 1000 per run).
        #[arg(long)]
        all: bool,
    },
    /// Deletes dead letters for good.
    Purge {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        message_id: Option<String>,
        /// Delete every dead letter; needs --yes.
        #[arg(long, requires = "yes")]
        all: bool,
        /// Confirms purging everything.
        #[arg(long)]
        yes: bool,
    },
    /// Shows a delivery's workflow: status, steps, attempts, last errors, reason.
    Workflow { delivery_id: String },
}

/// Runs one command, printing its result to stdout.
pub async fn run(args: DeadLettersArgs) -> anyhow::Result<()> {
    let base = args.url.trim_end_matches('/');
    let segment = platform::client::encode_segment;
    let (method, path) = match &args.command {
        DeadLettersCommand::List { limit, .. } => (Method::GET, format!("/api/deadletters?limit={limit}")),
        DeadLettersCommand::Show { message_id } => (Method::GET, format!("/api/deadletters/{}", segment(message_id))),
        DeadLettersCommand::Replay { message_id: Some(id), .. } => {
            (Method::POST, format!("/api/deadletters/{}/replay", segment(id)))
        }
        DeadLettersCommand::Replay { message_id: None, .. } => (Method::POST, "/api/deadletters/replay".to_owned()),
        DeadLettersCommand::Purge { message_id: Some(id), .. } => {
            (Method::DELETE, format!("/api/deadletters/{}", segment(id)))
        }
        DeadLettersCommand::Purge { message_id: None, .. } => (Method::DELETE, "/api/deadletters".to_owned()),
        DeadLettersCommand::Workflow { delivery_id } => {
            (Method::GET, format!("/api/workflows/{}", segment(delivery_id)))
        }
    };
    let client = platform::client::http_client(std::time::Duration::from_secs(30));
    let response = platform::client::send(client.request(method, format!("{base}{path}")))
        .await
        .with_context(|| format!("reaching the workflow at {base} (is it running? see --url)"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        let detail = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("detail").and_then(Value::as_str).map(str::to_owned))
            .unwrap_or(body);
        anyhow::bail!("{status}: {detail}");
    }
    let value: Value = if body.is_empty() { Value::Null } else { serde_json::from_str(&body)? };
    match &args.command {
        DeadLettersCommand::List { json: false, .. } => print_lines(&value),
        DeadLettersCommand::Purge { message_id: Some(id), .. } => println!("purged {id}"),
        _ => println!("{}", serde_json::to_string_pretty(&value)?),
    }
    Ok(())
}

fn print_lines(value: &Value) {
    let items = value.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no dead letters");
    }
    for item in items {
        let id = item["messageId"].as_str().unwrap_or("?");
        let attempts = item["attempts"].as_u64().unwrap_or(0);
        let error = item["lastError"].as_str().unwrap_or("");
        println!("{id}\tattempts={attempts}\t{error}");
    }
}
