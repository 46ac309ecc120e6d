//! A custom protocol is one small `Protocol` impl (under 60 lines, checked below).

use bytes::Bytes;
use sinew::{
    Ctx, Event, Handled, Message, Node, Opcode, OpcodeRange, Opcodes, PeerId, PeerInfo, Protocol,
};
use sinew_tests::{WAIT, addr};

// --- the protocol ---
const HELLO: u32 = 1100;
const COUNT: u32 = 1101;

/// Says hello to every peer that connects, counts the hellos it gets, and answers "how many?".
#[derive(Default)]
struct Greeter {
    greeted: u64,
}

/// Emitted when a hello arrives.
#[derive(Debug, PartialEq)]
struct Greeted(PeerId);

fn op(n: u32) -> Opcode {
    Opcode::app(n).expect("application opcode")
}

impl Protocol for Greeter {
    fn opcodes(&self) -> Opcodes {
        OpcodeRange::new(op(HELLO), op(COUNT)).expect("ordered").into()
    }

    fn on_peer_connected(&mut self, ctx: &mut Ctx<'_>, peer: &PeerInfo) {
        let _ = ctx.try_send(&peer.peer, op(HELLO), Bytes::from_static(b"hello"));
    }

    fn on_message(&mut self, ctx: &mut Ctx<'_>, msg: Message) -> Handled {
        match msg.opcode.value() {
            HELLO => {
                self.greeted += 1;
                ctx.emit(Greeted(msg.peer));
            }
            COUNT => {
                let _ = ctx.reply(&msg, Bytes::copy_from_slice(&self.greeted.to_le_bytes()));
            }
            _ => return Handled::No,
        }
        Handled::Yes
    }
}
// --- end of the protocol ---

async fn greeter_node() -> Node {
    let listen = "tcp://127.0.0.1:0".parse().unwrap();
    Node::builder(sinew::Keypair::generate())
        .protocol(Greeter::default())
        .listen(listen)
        .start()
        .await
        .unwrap()
}

#[tokio::test]
async fn greeter_runs_between_two_nodes() {
    let (a, b) = (greeter_node().await, greeter_node().await);
    let mut a_events = a.events();
    let peer = b.dial(addr(&a)).await.unwrap();
    let greeted = a_events
        .wait_for(WAIT, |e| match e {
            Event::Protocol(p) => p.downcast_ref::<Greeted>().map(|g| g.0),
            _ => None,
        })
        .await;
    assert_eq!(greeted, Some(b.peer_id()));
    let count = b.request(peer, op(COUNT), Bytes::new()).await.unwrap();
    assert_eq!(u64::from_le_bytes(count[..].try_into().unwrap()), 1);
}

#[test]
fn the_protocol_is_under_sixty_lines() {
    let source = include_str!("custom_protocol.rs");
    let start = source.find("// --- the protocol ---").unwrap();
    let end = source.find("// --- end of the protocol ---").unwrap();
    let lines = source[start..end].lines().count();
    assert!(lines < 60, "the custom protocol takes {lines} lines");
}
