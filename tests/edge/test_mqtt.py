"""``--events mqtt://…``: URI parsing, and publishing to a real Debian mosquitto that the tests kill and restart."""

from __future__ import annotations

import subprocess  # noqa: F401 - puts this module in the "media" tier (tests/conftest.py): it runs mosquitto
import time

import pytest

from emostream.edge.metrics import Metrics
from emostream.edge.mqtt import MqttError, MqttPublisher, parse_events_uri, topic_for, topic_level
from tests.edge.mqtt_broker import Broker, Subscriber, make_certs, require_mosquitto


def _event(i: int, stream: str = "cam/1") -> dict:
    return {"type": "event", "kind": "emotion_change", "stream": stream, "track": 1, "frame": i, "t": i / 30}


# --------------------------------------------------------------------------- URI and topics


def test_uri_defaults_and_tls():
    t = parse_events_uri("mqtt://broker.local/site/a", environ={})
    assert (t.host, t.port, t.topic, t.tls, t.username) == ("broker.local", 1883, "site/a", False, None)
    t = parse_events_uri("mqtts://broker.local", environ={})
    assert (t.port, t.topic, t.tls) == (8883, "emostream", True)
    t = parse_events_uri("mqtt://127.0.0.1:1999/x?buffer=5&client_id=edge7&keepalive=10", environ={})
    assert (t.port, t.buffer, t.client_id, t.keepalive) == (1999, 5, "edge7", 10)


def test_credentials_from_uri_or_environment_and_never_printed():
    t = parse_events_uri("mqtt://ann:s%40cret@h/t", environ={"MQTT_USERNAME": "env", "MQTT_PASSWORD": "envpw"})
    assert (t.username, t.password) == ("ann", "s@cret")
    assert "s@cret" not in t.url and "s@cret" not in repr(t)
    t = parse_events_uri("mqtt://h/t", environ={"MQTT_USERNAME": "env", "MQTT_PASSWORD": "envpw"})
    assert (t.username, t.password) == ("env", "envpw")
    with pytest.raises(MqttError, match="password without a user"):
        parse_events_uri("mqtt://h/t", environ={"MQTT_PASSWORD": "x"})


@pytest.mark.parametrize("uri, why", [
    ("http://h/t", "expected mqtt://"),
    ("mqtt:///t", "no broker host"),
    ("mqtt://h/a/+/b", "wildcards"),
    ("mqtt://h/a#b", "may not hold '#'"),
    ("mqtt://h/a//b", "empty levels"),
    ("mqtt://h/t?qos=2", "unknown option"),
    ("mqtt://h/t?buffer=0", "buffer= must be"),
    ("mqtt://h/t?buffer=lots", "whole numbers"),
    ("mqtt://h:99999/t", "out of range|Port"),
    ("mqtt://h/t?ca=/etc/hostname", "ca= needs mqtts"),
    ("mqtts://h/t?ca=/nonexistent.pem", "not found"),
])
def test_bad_uris_say_why(uri, why):
    with pytest.raises(MqttError, match=why):
        parse_events_uri(uri, environ={})


def test_topic_layout():
    assert topic_level("../data/clip.mp4") == ".._data_clip.mp4"
    assert topic_level("a+b#c\x00") == "a_b_c_"
    assert topic_for("base", _event(1)) == "base/cam_1/event/emotion_change"
    assert topic_for("base", {"type": "reasoning", "stream": "s"}) == "base/s/reasoning"
    assert topic_for("base", {"type": "frame", "stream": "s"}) == "base/s/frame"
    assert topic_for("base", {"type": "other"}) is None


# --------------------------------------------------------------------------- a real broker


@pytest.fixture
def broker(tmp_path):
    require_mosquitto()
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()


def test_publishes_events_with_qos1_and_status(broker):
    sub = Subscriber(broker.port, "t/#")
    metrics = Metrics()
    pub = MqttPublisher(parse_events_uri(f"mqtt://127.0.0.1:{broker.port}/t", environ={}), metrics=metrics)
    try:
        for i in range(50):
            pub.record(_event(i))
        pub.record({"type": "frame", "stream": "cam/1", "frame": 1, "t": 0.0, "faces": []})  # not without frames=
        pub.record({"type": "reasoning", "stream": "cam/1", "track": 1, "expression": "happy"})
        assert sub.wait_for(lambda m: len([1 for t, _ in m if t != "t/status"]) >= 51)
        summary = pub.close()
    finally:
        sub.close()
    topics = [t for t, _ in sub.messages]
    assert topics.count("t/cam_1/event/emotion_change") == 50 and "t/cam_1/reasoning" in topics
    assert "t/cam_1/frame" not in topics
    assert sub.seqs() == set(range(1, 52))
    assert ("t/status", {"online": True}) in sub.messages
    assert pub.counts["published"] == 51 and "51 published, 0 dropped" in summary
    assert metrics.registry.get_sample_value("emostream_mqtt_published_total") == 51


def test_broker_killed_and_restarted_loses_nothing_within_the_buffer(broker):
    """SIGKILL the broker mid-run: what is published meanwhile waits in the buffer and arrives after the restart."""
    sub = Subscriber(broker.port, "t/#", client_id="sub-restart")
    pub = MqttPublisher(parse_events_uri(f"mqtt://127.0.0.1:{broker.port}/t?buffer=1000", environ={}))
    try:
        for i in range(100):
            pub.record(_event(i))
        assert sub.wait_for(lambda m: len(sub.seqs()) >= 100)
        broker.wait_saved()  # the subscriber's session is on disk
        broker.kill()
        for i in range(100, 400):  # while the broker is away: buffered, not lost
            pub.record(_event(i))
            time.sleep(0.002)
        assert pub.pending() >= 250
        broker.start()
        for i in range(400, 450):
            pub.record(_event(i))
        assert sub.wait_for(lambda m: len(sub.seqs()) >= 450, timeout=40), f"got {len(sub.seqs())} of 450"
        summary = pub.close()
    finally:
        sub.close()
    assert sub.seqs() == set(range(1, 451))
    assert pub.counts["dropped_buffer"] == 0 and pub.counts["connects"] >= 2, summary


def test_buffer_bound_drops_the_oldest_and_counts_them(broker):
    metrics = Metrics()
    sub = Subscriber(broker.port, "t/#", client_id="sub-bound")
    pub = MqttPublisher(parse_events_uri(f"mqtt://127.0.0.1:{broker.port}/t?buffer=50", environ={}), metrics=metrics)
    try:
        pub.record(_event(0))
        assert sub.wait_for(lambda m: 1 in sub.seqs())
        broker.wait_saved()
        broker.kill()
        time.sleep(0.3)
        for i in range(1, 201):  # 200 while away, buffer 50: the 150 oldest go
            pub.record(_event(i))
        broker.start()
        assert sub.wait_for(lambda m: 201 in sub.seqs(), timeout=40)
        time.sleep(0.5)
        pub.close()
    finally:
        sub.close()
    got = sub.seqs()
    # seq 1 arrived before; a few may have been in paho's hands when the broker died (in flight, resent);
    # of the rest only the newest 50 are kept.
    lost = set(range(1, 202)) - got
    assert len(lost) == pub.counts["dropped_buffer"]
    assert 140 <= pub.counts["dropped_buffer"] <= 150
    assert set(range(152, 202)) <= got
    assert metrics.registry.get_sample_value("emostream_mqtt_dropped_total", {"reason": "buffer"}) == len(lost)


def test_authentication_from_environment(tmp_path):
    require_mosquitto()
    b = Broker(tmp_path, users={"edge": "pw-123"})
    b.start()
    try:
        sub = Subscriber(b.port, "t/#", client_id="sub-auth", username="edge", password="pw-123")
        good = MqttPublisher(parse_events_uri(f"mqtt://127.0.0.1:{b.port}/t",
                                              environ={"MQTT_USERNAME": "edge", "MQTT_PASSWORD": "pw-123"}))
        bad = MqttPublisher(parse_events_uri(f"mqtt://edge:wrong@127.0.0.1:{b.port}/t", environ={}))
        good.record(_event(1))
        bad.record(_event(2))
        assert sub.wait_for(lambda m: any(p.get("frame") == 1 for _t, p in m))
        time.sleep(0.5)
        assert good.close().endswith("1 published, 0 dropped")
        line = bad.close(drain_s=0.2)
        sub.close()
        assert "UNREACHABLE" in line and "not authorized" in line.lower() and "wrong" not in line
        assert not any(p.get("frame") == 2 for _t, p in sub.messages)
    finally:
        b.stop()


def test_tls_verifies_the_broker(tmp_path):
    """mqtts:// with ?ca= the broker's CA: published over TLS; with the system CAs (not knowing this CA): refused."""
    require_mosquitto()
    certs = make_certs(tmp_path)
    b = Broker(tmp_path, tls=certs)
    b.start()
    try:
        sub = Subscriber(b.port, "t/#", client_id="sub-tls", ca=certs["cafile"])
        good = MqttPublisher(parse_events_uri(f"mqtts://localhost:{b.port}/t?ca={certs['cafile']}", environ={}))
        untrusted = MqttPublisher(parse_events_uri(f"mqtts://localhost:{b.port}/t", environ={}))
        good.record(_event(1))
        untrusted.record(_event(2))
        assert sub.wait_for(lambda m: any(p.get("frame") == 1 for _t, p in m))
        assert good.close().endswith("1 published, 0 dropped")
        line = untrusted.close(drain_s=0.5)
        sub.close()
        assert "UNREACHABLE" in line and "TLS verification" in line and untrusted.counts["published"] == 0
        assert not any(p.get("frame") == 2 for _t, p in sub.messages)
    finally:
        b.stop()


def test_a_ca_file_that_is_not_a_certificate_is_a_clear_error(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(MqttError, match="cannot use CA file"):
        parse_events_uri(f"mqtts://localhost:1/t?ca={bad}", environ={})


def test_unreachable_broker_never_blocks_the_caller():
    """Nothing listens on the port: record() returns at once, close() reports it and counts what was lost."""
    from tests.edge.mqtt_broker import free_port

    pub = MqttPublisher(parse_events_uri(f"mqtt://127.0.0.1:{free_port()}/t?buffer=10", environ={}))
    t0 = time.perf_counter()
    for i in range(1000):
        pub.record(_event(i))
    assert time.perf_counter() - t0 < 2.0  # generous: 1000 json.dumps, no network wait
    line = pub.close(drain_s=0.1)
    assert pub.counts["dropped_buffer"] == 990 and pub.counts["dropped_unsent"] == 10
    assert "UNREACHABLE" in line and "1000 dropped" in line


def test_run_publishes_every_record_it_writes(broker, emostream, data_file, tmp_path):
    """``emostream run --events … --events-frames --alert …`` on the Pexels clip: the subscriber gets what the
    output got -- frames, track events, alerts, reasoner answers -- on their topics, in order."""
    clip = data_file("video/WolfgangLanger_Pexels.mp4")
    sub = Subscriber(broker.port, "em/#", client_id="sub-run")
    out = tmp_path / "r.jsonl"
    try:
        proc = emostream("run", str(clip), "--stream-id", "pexels", "--max-frames", "120", "--alert",
                         "sad>=0.3 for 1s", "--events", f"mqtt://127.0.0.1:{broker.port}/em", "--events-frames",
                         "--output", str(out), timeout=180)
        assert proc.returncode == 0, proc.stderr
        records = [__import__("json").loads(line) for line in out.read_text().splitlines()]
        assert sub.wait_for(lambda m: len([1 for t, _ in m if t != "em/status"]) >= len(records))
    finally:
        sub.close()
    got = [(t, {k: v for k, v in p.items() if k != "seq"}) for t, p in sub.messages if t != "em/status"]
    assert [p for _t, p in got] == records
    topics = {t for t, _p in got}
    assert {"em/pexels/frame", "em/pexels/event/track_start", "em/pexels/event/alert", "em/pexels/reasoning",
            "em/pexels/event/track_end"} <= topics
    assert f"mqtt mqtt://127.0.0.1:{broker.port}/em: {len(records)} published, 0 dropped" in proc.stderr
