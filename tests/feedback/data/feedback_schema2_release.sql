BEGIN TRANSACTION;
CREATE TABLE admin_tokens (
	id INTEGER NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (token_hash)
);
INSERT INTO "admin_tokens" VALUES(1,'f948282aeeb3ff1ec0fe640df52ae0ad276423010fc43443422a6d1c1c5d7bc7','2026-12-05 11:42:46.840080');
CREATE TABLE annotations (
	id INTEGER NOT NULL, 
	assignment_id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	task_id INTEGER NOT NULL, 
	annotator_id INTEGER NOT NULL, 
	idempotency_key VARCHAR(128) NOT NULL, 
	body_sha256 VARCHAR(64) NOT NULL, 
	answer JSON NOT NULL, 
	resolved JSON NOT NULL, 
	is_skip BOOLEAN NOT NULL, 
	critique TEXT, 
	time_spent_ms INTEGER, 
	source VARCHAR(16) DEFAULT 'api' NOT NULL, 
	submitted_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (annotator_id, idempotency_key), 
	UNIQUE (assignment_id), 
	FOREIGN KEY(assignment_id) REFERENCES assignments (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaigns (id), 
	FOREIGN KEY(task_id) REFERENCES tasks (id), 
	FOREIGN KEY(annotator_id) REFERENCES annotators (id)
);
INSERT INTO "annotations" VALUES(1,1,1,3,1,'release-key-1','5173b656798457c7e3ec849c7485e34d9f569293f0b4e15e86066a2651e5e7f0','{"choice": "left", "margin": 1.5}','{"winner": 2, "margin": 1.5}',0,NULL,NULL,'api','2026-12-05 11:42:46.946868');
CREATE TABLE annotators (
	id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	token_hash VARCHAR(64) NOT NULL, 
	active BOOLEAN NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (token_hash)
);
INSERT INTO "annotators" VALUES(1,'ann','e79df453ae580d2b44867530aa0d58c5c3f91c0d28c7ab030d762609bcd0743e',1,'2026-12-05 11:42:46.908849');
CREATE TABLE assignments (
	id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	task_id INTEGER NOT NULL, 
	annotator_id INTEGER NOT NULL, 
	displayed JSON NOT NULL, 
	status VARCHAR(8) NOT NULL, 
	served_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (task_id, annotator_id), 
	FOREIGN KEY(campaign_id) REFERENCES campaigns (id), 
	FOREIGN KEY(task_id) REFERENCES tasks (id), 
	FOREIGN KEY(annotator_id) REFERENCES annotators (id)
);
INSERT INTO "assignments" VALUES(1,1,3,1,'[2, 3]','answered','2026-12-05 11:42:46.932957');
CREATE TABLE campaign_members (
	campaign_id INTEGER NOT NULL, 
	annotator_id INTEGER NOT NULL, 
	PRIMARY KEY (campaign_id, annotator_id), 
	FOREIGN KEY(campaign_id) REFERENCES campaigns (id), 
	FOREIGN KEY(annotator_id) REFERENCES annotators (id)
);
INSERT INTO "campaign_members" VALUES(1,1);
CREATE TABLE campaigns (
	id INTEGER NOT NULL, 
	name VARCHAR(200) NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	redundancy INTEGER NOT NULL, 
	scale_lo FLOAT NOT NULL, 
	scale_hi FLOAT NOT NULL, 
	rank_k INTEGER NOT NULL, 
	allow_critique BOOLEAN NOT NULL, 
	instructions TEXT NOT NULL, 
	gold_rate FLOAT NOT NULL, 
	status VARCHAR(8) NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "campaigns" VALUES(1,'release','pairwise',1,1.0,5.0,3,0,'',0.1,'open','2026-12-05 11:42:46.848337');
CREATE TABLE prompts (
	id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	text TEXT NOT NULL, 
	text_sha256 VARCHAR(64) NOT NULL, 
	PRIMARY KEY (id), 
	UNIQUE (campaign_id, text_sha256), 
	FOREIGN KEY(campaign_id) REFERENCES campaigns (id)
);
INSERT INTO "prompts" VALUES(1,1,'p','148de9c5a7a44d19e56cd9ae1a554bf67847afb0c58f6e12fa29ac7ddfca9940');
CREATE TABLE samples (
	id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	prompt_id INTEGER NOT NULL, 
	response TEXT NOT NULL, 
	model VARCHAR(200), 
	round INTEGER, 
	meta JSON NOT NULL, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaigns (id), 
	FOREIGN KEY(prompt_id) REFERENCES prompts (id)
);
INSERT INTO "samples" VALUES(1,1,1,'r0',NULL,NULL,'{}','2026-12-05 11:42:46.856516');
INSERT INTO "samples" VALUES(2,1,1,'r1',NULL,NULL,'{}','2026-12-05 11:42:46.856520');
INSERT INTO "samples" VALUES(3,1,1,'r2',NULL,NULL,'{}','2026-12-05 11:42:46.856521');
CREATE TABLE schema_version (
	id INTEGER NOT NULL, 
	version INTEGER NOT NULL, 
	PRIMARY KEY (id)
);
INSERT INTO "schema_version" VALUES(1,2);
CREATE TABLE task_items (
	task_id INTEGER NOT NULL, 
	slot INTEGER NOT NULL, 
	sample_id INTEGER NOT NULL, 
	PRIMARY KEY (task_id, slot), 
	FOREIGN KEY(task_id) REFERENCES tasks (id), 
	FOREIGN KEY(sample_id) REFERENCES samples (id)
);
INSERT INTO "task_items" VALUES(1,0,1);
INSERT INTO "task_items" VALUES(1,1,2);
INSERT INTO "task_items" VALUES(2,0,1);
INSERT INTO "task_items" VALUES(2,1,3);
INSERT INTO "task_items" VALUES(3,0,2);
INSERT INTO "task_items" VALUES(3,1,3);
CREATE TABLE tasks (
	id INTEGER NOT NULL, 
	campaign_id INTEGER NOT NULL, 
	prompt_id INTEGER NOT NULL, 
	kind VARCHAR(16) NOT NULL, 
	scale_lo FLOAT, 
	scale_hi FLOAT, 
	is_gold BOOLEAN NOT NULL, 
	gold JSON, 
	created_at DATETIME NOT NULL, 
	PRIMARY KEY (id), 
	FOREIGN KEY(campaign_id) REFERENCES campaigns (id), 
	FOREIGN KEY(prompt_id) REFERENCES prompts (id)
);
INSERT INTO "tasks" VALUES(1,1,1,'pairwise',NULL,NULL,0,'null','2026-12-05 11:42:46.863410');
INSERT INTO "tasks" VALUES(2,1,1,'pairwise',NULL,NULL,0,'null','2026-12-05 11:42:46.864888');
INSERT INTO "tasks" VALUES(3,1,1,'pairwise',NULL,NULL,0,'null','2026-12-05 11:42:46.865665');
CREATE INDEX ix_prompts_campaign_id ON prompts (campaign_id);
CREATE INDEX ix_samples_prompt_id ON samples (prompt_id);
CREATE INDEX ix_samples_campaign_id ON samples (campaign_id);
CREATE INDEX ix_tasks_campaign_id ON tasks (campaign_id);
CREATE INDEX ix_assignments_campaign_annotator ON assignments (campaign_id, annotator_id, status);
CREATE INDEX ix_assignments_task_id ON assignments (task_id);
CREATE INDEX ix_annotations_campaign_id ON annotations (campaign_id);
CREATE INDEX ix_annotations_task_id ON annotations (task_id);
COMMIT;
