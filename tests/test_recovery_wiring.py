"""Recovery and dead letters as deployed: template.yml under the real `fun validate`, s.yaml under
the real `s preview` and the fc3 schema."""

import json

import jsonschema
import pytest
import yaml
from test_deployment import fun_validate, load_template
from test_fc3 import DEPLOY_ENV, FC3_SCHEMA, render_s_yaml

SERVICE = "dingtalk-callback"


def test_template_declares_the_recovery_timer_and_the_dead_letter_destination():
    service = load_template()["Resources"][SERVICE]
    recover = service["recover"]
    assert recover["Properties"]["Handler"] == "index.recover"
    assert recover["Properties"]["Runtime"] == "python3"
    assert "DINGTALK_APP_SECRET" in recover["Properties"]["EnvironmentVariables"]
    assert recover["Properties"]["Timeout"] >= 240 + 20  # the default budget and its margin
    (trigger,) = recover["Events"].values()
    assert trigger["Type"] == "Timer"
    assert trigger["Properties"]["CronExpression"] == "@every 5m"
    assert trigger["Properties"]["Enable"] is True
    assert service["dead-letter"]["Properties"]["Handler"] == "index.dead_letter"
    destination = service["worker"]["Properties"]["AsyncConfiguration"]["Destination"]["OnFailure"]
    assert destination.startswith("acs:fc:")
    assert destination.endswith(f"services/{SERVICE}.LATEST/functions/dead-letter")


@pytest.mark.parametrize(
    ("mutate", "complaint"),
    [
        (lambda recover: recover["Events"]["every-5-minutes"]["Properties"].pop("CronExpression"), "CronExpression"),
        (lambda recover: recover["Events"]["every-5-minutes"].update(Type="Cron"), "Timer"),
    ],
    ids=["no cron expression", "not a Timer"],
)
def test_fun_validate_catches_a_broken_timer(tmp_path, mutate, complaint):
    template = load_template()
    mutate(template["Resources"][SERVICE]["recover"])
    broken = tmp_path / "template.yml"
    broken.write_text(yaml.safe_dump(template))
    result = fun_validate(str(broken))
    assert "template is not valid" in result.stdout + result.stderr
    assert complaint in result.stdout + result.stderr


def test_s_yaml_declares_recovery_and_dead_letter_for_fc3(tmp_path, s_home):
    resources = render_s_yaml(tmp_path, s_home)["resources"]
    recover, dead_letter = resources["recover"]["props"], resources["dead-letter"]["props"]
    assert recover["handler"] == "index.recover"
    assert recover["environmentVariables"]["DINGTALK_APP_SECRET"] == DEPLOY_ENV["DINGTALK_APP_SECRET"]
    assert recover["role"] == resources["callback"]["props"]["role"]  # deferred events hand off from it
    assert resources["worker"]["props"]["asyncInvokeConfig"]["destinationConfig"]["onFailure"]["destination"].endswith(
        "functions/" + dead_letter["functionName"]
    )
    assert recover["triggers"] == [
        {
            "triggerName": "every5minutes",
            "triggerType": "timer",
            "triggerConfig": {"cronExpression": "@every 5m", "enable": True, "payload": "recover"},
        }
    ]
    assert dead_letter["handler"] == "index.dead_letter"
    with open(FC3_SCHEMA, encoding="utf-8") as source:
        schema = json.load(source)
    for props in (recover, dead_letter):
        jsonschema.validate(props, schema)
