//! Helpers shared by the CLI's integration tests.

use chatvault_core::lifecycle::{ExportWriter, ExportedConversation, ExportedMessage};
use chatvault_core::{ConversationId, DeviceId, Hlc, MessageId, Metadata, Role, Timestamp, UserId};
use std::path::Path;

/// Writes an export with `messages` messages (text from `content`) in
/// conversations of `per_conversation`; returns how many conversations.
pub fn big_export(
    path: &Path,
    messages: u64,
    per_conversation: u64,
    content: impl Fn(u64) -> String,
) -> u64 {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let t0 = 1_700_000_000_000i64;
    let device = DeviceId(0xb16);
    let mut w = ExportWriter::new(file, Timestamp(t0)).unwrap();
    let conversations = messages.div_ceil(per_conversation);
    let conv_id = |c: u64| {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&c.to_be_bytes());
        b[8] = 0xc0;
        ConversationId::from_bytes(b)
    };
    for c in 0..conversations {
        w.conversation(&ExportedConversation {
            id: conv_id(c),
            user_id: UserId::local(),
            title: format!("conversation {c}"),
            created_at: Timestamp(t0),
            updated_at: Timestamp(t0),
            activity_at: None,
            version: Hlc::new(t0 as u64, 0, device).unwrap(),
            metadata: Metadata::new(),
        })
        .unwrap();
    }
    for m in 0..messages {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&m.to_be_bytes());
        b[8] = 0x3e;
        let at = t0 + m as i64;
        w.message(&ExportedMessage {
            id: MessageId::from_bytes(b),
            conversation_id: conv_id(m / per_conversation),
            role: Role::ALL[(m % 4) as usize],
            content: content(m),
            created_at: Timestamp(at),
            updated_at: Timestamp(at),
            version: Hlc::new(at as u64, 0, device).unwrap(),
            metadata: Metadata::new(),
        })
        .unwrap();
    }
    w.finish().unwrap();
    conversations
}
