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

/// A protocol that panics is removed, and nothing else is: the node, its connections and its
/// other protocols go on, and the panicking protocol's opcode is unhandled from then on.
#[tokio::test]
async fn a_panicking_protocol_is_removed_and_the_node_goes_on() {
    struct Fragile;
    impl Protocol for Fragile {
        fn name(&self) -> &'static str {
            "fragile"
        }
        fn opcodes(&self) -> Opcodes {
            op(1200).into()
        }
        fn on_message(&mut self, _ctx: &mut Ctx<'_>, msg: Message) -> Handled {
            assert!(msg.payload.as_ref() != b"boom", "fragile protocol breaks");
            Handled::Yes
        }
    }
    let a = Node::builder(sinew::Keypair::generate())
        .listen("tcp://127.0.0.1:0".parse().unwrap())
        .protocol(Fragile)
        .start()
        .await
        .unwrap();
    let mut inbox = a.inbox(op(1201)).await.unwrap();
    let mut events = a.events();
    let b = Node::builder(sinew::Keypair::generate()).start().await.unwrap();
    let peer = b.dial(addr(&a)).await.unwrap();
    b.send(peer, op(1200), Bytes::from_static(b"boom")).await.unwrap();
    let panicked = events
        .wait_for(WAIT, |e| match e {
            Event::ProtocolPanicked { protocol, message } => Some((*protocol, message.clone())),
            _ => None,
        })
        .await;
    assert_eq!(panicked, Some(("fragile", "fragile protocol breaks".to_owned())));
    // The node and the other protocols go on...
    b.ping(peer).await.expect("the connection is up");
    b.send(peer, op(1201), Bytes::from_static(b"still here")).await.unwrap();
    let msg = tokio::time::timeout(WAIT, inbox.next()).await.unwrap().unwrap();
    assert_eq!(&msg.payload[..], b"still here");
    // ... and the removed protocol's opcode is unknown now.
    let answer = b.request(peer, op(1200), Bytes::from_static(b"anyone?")).await;
    assert!(
        matches!(answer, Err(sinew::RequestError::Remote(sinew::Status::UNKNOWN_OPCODE))),
        "{answer:?}"
    );
}

/// Keeps a list the application edits; tells it each length, and pings its peers on demand.
struct Roster(Vec<String>);
impl Protocol for Roster {
    fn opcodes(&self) -> Opcodes {
        Opcodes::none()
    }
}
impl sinew::Commands for Roster {
    type Command = String;
    type Answer = Vec<String>;
    type Notice = usize;
    fn on_command(&mut self, ctx: &mut Ctx<'_>, name: String) -> Vec<String> {
        self.0.push(name);
        ctx.notify(self.0.len());
        self.0.clone()
    }
}

/// A protocol's handle: typed commands and answers, its notices bounded with the oldest
/// dropped and counted, and a typed error once it is unregistered.
#[tokio::test]
async fn a_protocol_handle_carries_typed_commands_and_a_bounded_feed() {
    let node = sinew_tests::node_with(|c| c.feed_capacity = 4).await;
    let mut roster = node.register_with_handle(Roster(Vec::new())).await.unwrap();
    assert_eq!(roster.call("a".into()).await.unwrap(), vec!["a".to_string()]);
    assert_eq!(roster.notices().next().await, Some(Ok(1)));
    for name in ["b", "c", "d", "e", "f", "g"] {
        roster.call(name.into()).await.unwrap();
    }
    // Six notices into a feed of four: the two oldest were dropped, and the reader is told.
    let feed = roster.notices();
    assert_eq!(feed.next().await, Some(Err(sinew::Lagged(2))));
    let rest: Vec<_> = [feed.next().await, feed.next().await, feed.next().await, feed.next().await]
        .into_iter()
        .map(|n| n.unwrap().unwrap())
        .collect();
    assert_eq!(rest, vec![4, 5, 6, 7], "in order, the newest kept");
    assert!(node.unregister(roster.id()).await);
    assert_eq!(roster.call("h".into()).await, Err(sinew::CallError::Unregistered));
    assert_eq!(roster.notices().next().await, None, "the feed ends with the protocol");
    node.shutdown().await;
    assert_eq!(roster.call("i".into()).await, Err(sinew::CallError::Stopped));
}
