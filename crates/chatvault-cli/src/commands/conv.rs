//! `chatvault conv ...`: conversations.

use super::{parse_id, Access, Context};
use crate::cli::ConvCommand;
use crate::output::{self, Table};
use anyhow::Result;
use chatvault::{ConversationUpdate, ListConversations, NewConversation, VaultError};
use futures::StreamExt;
use serde_json::json;

pub async fn run(ctx: &Context, cmd: ConvCommand) -> Result<()> {
    match cmd {
        ConvCommand::New { title, json } => {
            let vault = ctx.open(Access::Existing).await?;
            let c = vault
                .create_conversation(NewConversation::titled(title))
                .await?;
            output::created(json.json, &c, c.id)
        }
        ConvCommand::Ls { limit, json } => {
            let vault = ctx.open(Access::Existing).await?;
            let wanted = limit.unwrap_or(usize::MAX);
            let mut stream = std::pin::pin!(vault.conversations_stream(ListConversations {
                limit: wanted.min(500),
                ..Default::default()
            }));
            let (mut all, mut damaged) = (Vec::new(), Vec::new());
            while all.len() < wanted {
                match stream.next().await {
                    None => break,
                    Some(Ok(c)) => all.push(c),
                    Some(Err(VaultError::CorruptRecord { id, .. })) => damaged.push(id),
                    Some(Err(e)) => return Err(e.into()),
                }
            }
            output::warn_damaged("conversation", &damaged);
            if json.json {
                return output::json(&output::with_damaged(&all, &damaged)?);
            }
            let mut t = Table::new(["ID", "UPDATED", "TITLE"]);
            for c in &all {
                t.row([
                    c.id.to_string(),
                    output::ago(c.updated_at),
                    output::text(&c.title),
                ]);
            }
            t.print()?;
            Ok(())
        }
        ConvCommand::Show { id, limit, json } => {
            let vault = ctx.open(Access::Existing).await?;
            let c = vault.conversation(parse_id(&id)?).await?;
            let page = super::msg::page(&vault, c.id, limit, None).await?;
            output::warn_damaged("message", &page.damaged);
            let messages = page.items;
            if json.json {
                return output::json(&json!({ "conversation": c, "messages": messages }));
            }
            outln!("{}  {}", c.id, output::text(&c.title));
            outln!(
                "created {}  updated {}",
                output::ago(c.created_at),
                output::ago(c.updated_at)
            );
            if !c.metadata.is_empty() {
                outln!(
                    "metadata {}",
                    output::text(&serde_json::Value::Object(c.metadata.clone()).to_string())
                );
            }
            for m in &messages {
                outln!("\n[{}] {} {}", m.role, output::ago(m.created_at), m.id);
                outln!("{}", output::multiline(&m.content));
            }
            Ok(())
        }
        ConvCommand::Rename { id, title } => {
            let vault = ctx.open(Access::Existing).await?;
            vault
                .update_conversation(
                    parse_id(&id)?,
                    ConversationUpdate {
                        title: Some(title),
                        metadata: None,
                    },
                )
                .await?;
            Ok(())
        }
        ConvCommand::Rm { id } => {
            let vault = ctx.open(Access::Existing).await?;
            vault.delete_conversation(parse_id(&id)?).await?;
            Ok(())
        }
    }
}
